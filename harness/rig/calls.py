"""Placing test calls into the rig and checking what the caller heard."""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from .asterisk import SHARED, AsteriskRig

CALLS_DIR = SHARED / "calls"
TARGET_TONE_HZ = 1900.0
QUESTIONS_DIR = SHARED / "questions"

# The caller's side of a test call (the ;1 half of the Local channel) and the 8008 side's entry,
# which sets the caller ID (name and, when given, number from base64, so they may hold anything)
# and jumps into our dialplan.
RIG_DIALPLAN = f"""
[va-test-entry]
exten => _X.,1,Set(KEY=${{EXTEN}})
 same => n,Set(CALLERID(num)=${{GLOBAL(VAT_${{KEY}}_NUM)}})
 same => n,Set(NUM64=${{GLOBAL(VAT_${{KEY}}_NUM64)}})
 same => n,ExecIf($["${{NUM64}}" != ""]?Set(CALLERID(num)=${{BASE64_DECODE(${{NUM64}})}}))
 same => n,Set(NAME64=${{GLOBAL(VAT_${{KEY}}_NAME64)}})
 same => n,ExecIf($["${{NAME64}}" != ""]?Set(CALLERID(name)=${{BASE64_DECODE(${{NAME64}})}}))
 same => n,Set(VA_GRACE_S=${{GLOBAL(VAT_${{KEY}}_GRACE)}})
 same => n,Set(VA_LISTEN=${{GLOBAL(VAT_${{KEY}}_ENDING)}})
 same => n,Set(VA_LANGUAGE=${{GLOBAL(VAT_${{KEY}}_LANGUAGE)}})
 same => n,Goto(${{GLOBAL(VAT_${{KEY}}_CONTEXT)}},8008,1)

[va-test-caller]
exten => _X.,1,Set(KEY=${{EXTEN}})
 same => n,Answer()
 same => n,MixMonitor({CALLS_DIR}/${{KEY}}-heard.wav,r({CALLS_DIR}/${{KEY}}-in.wav))
 same => n,Set(QS=${{GLOBAL(VAT_${{KEY}}_QUESTIONS)}})
 same => n,Set(I=1)
 same => n(next),Set(Q=${{CUT(QS,&,${{I}})}})
 same => n,GotoIf($["${{Q}}" = ""]?listen)
 same => n,GotoIf($["${{Q:0:1}}" = "~"]?over)
 ; wait for the assistant to speak (greeting, or answer + "anything else") and finish (the beep).
 ; 1500 ms: a pipelined answer played by process AGI is followed by up to ~1 s of silence (the
 ; turn is stored and the process exits) before "anything else?"; a caller waits for the prompt.
 same => n,WaitForNoise(100,1,90)
 same => n,WaitForSilence(1500,1,90)
 same => n,GotoIf($["${{Q}}" = "silence"]?skip)
 same => n,Playback(${{Q}})
 same => n(skip),Set(I=$[${{I}} + 1])
 same => n,Goto(next)
 ; "~<seconds>~<sound>": once the assistant speaks, wait <seconds> and play <sound> over it
 ; (a real-time caller interrupting, or echo and noise that must not interrupt); "silence": just
 ; wait; "dtmf-<keys>": press those keys (RFC 4733 events on a real line; DTMF frames here)
 same => n(over),WaitForNoise(100,1,90)
 same => n,Wait(${{CUT(Q,~,2)}})
 same => n,Set(SOUND=${{CUT(Q,~,3)}})
 same => n,GotoIf($["${{SOUND:0:5}}" = "dtmf-"]?dtmf)
 same => n,ExecIf($["${{SOUND}}" != "silence"]?Playback(${{SOUND}}))
 same => n,Goto(skip)
 same => n(dtmf),SendDTMF(${{SOUND:5}})
 same => n,Goto(skip)
 same => n(listen),Wait(${{GLOBAL(VAT_${{KEY}}_LISTEN)}})
 same => n,Hangup()
exten => h,1,UserEvent(VATestDone,Key: ${{KEY}})

[va-talk-a]
; Two people talking, for the console's live transcripts: `channel originate Local/<key>@va-talk-a
; extension <key>@va-talk-b`. Each side runs its script, VAT_<key>_A or _B: "&"-separated sound
; names and "~<seconds>" pauses; the ;1 half runs B's script, the ;2 half A's. What each side
; hears is recorded in calls/talk-<key>-a.wav and -b.wav.
exten => _X.,1,Set(SCRIPT=${{GLOBAL(VAT_${{EXTEN}}_A)}})
 same => n,Set(HEARD={CALLS_DIR}/talk-${{EXTEN}}-a.wav)
 same => n,Goto(va-talk-script,s,1)

[va-talk-b]
exten => _X.,1,Set(SCRIPT=${{GLOBAL(VAT_${{EXTEN}}_B)}})
 same => n,Set(HEARD={CALLS_DIR}/talk-${{EXTEN}}-b.wav)
 same => n,Goto(va-talk-script,s,1)

[va-talk-script]
exten => s,1,Answer()
 same => n,MixMonitor(${{HEARD}}.mix.wav,r(${{HEARD}}))
 same => n,Set(I=1)
 same => n(next),Set(STEP=${{CUT(SCRIPT,&,${{I}})}})
 same => n,GotoIf($["${{STEP}}" = ""]?done)
 same => n,GotoIf($["${{STEP:0:1}}" = "~"]?pause)
 same => n,Playback(${{STEP}})
 same => n(more),Set(I=$[${{I}} + 1])
 same => n,Goto(next)
 same => n(pause),Wait(${{STEP:1}})
 same => n,Goto(more)
 same => n(done),Hangup()

[va-local]
; 8008 through a FastAGI server on port 4574 (the local-providers server of the tests and main job)
exten => 8008,1,Set(VA_AGI=agi://127.0.0.1:4574/voiceassist)
 same => n,Set(VA_EXTEN=${{EXTEN}})
 same => n,Goto(voiceassist-flow,s,1)

[va-live]
; 8008 as the real-time conversation of the tests' real-time server (port 4579: [live] transport audiosocket)
exten => 8008,1,Set(VA_LIVE_AGI=agi://127.0.0.1:4579/voiceassist-live)
 same => n,Set(VA_EXTEN=${{EXTEN}})
 same => n,Goto(voiceassist-live-flow,s,1)

[va-live-ws]
; the same through Asterisk's WebSocket channel: the server on port 4578 has [live] transport websocket
exten => 8008,1,Set(VA_LIVE_AGI=agi://127.0.0.1:4578/voiceassist-live)
 same => n,Set(VA_EXTEN=${{EXTEN}})
 same => n,Goto(voiceassist-live-flow,s,1)

[va-live-local]
; the real-time conversation on the local providers (the main job's --live call; port 4574)
exten => 8008,1,Set(VA_LIVE_AGI=agi://127.0.0.1:4574/voiceassist-live)
 same => n,Set(VA_EXTEN=${{EXTEN}})
 same => n,Goto(voiceassist-live-flow,s,1)

[va-test-agi]
; 8008 through the FastAGI URL the test chose (e.g. another server, a ?secret= or a wrong one)
exten => 8008,1,Set(VA_AGI=${{GLOBAL(VAT_${{KEY}}_AGI)}})
 same => n,Set(VA_EXTEN=${{EXTEN}})
 same => n,Goto(voiceassist-flow,s,1)

[va-live-actions]
; the real-time conversation of the call-action tests' server (port 4583: destinations configured)
exten => 8008,1,Set(VA_LIVE_AGI=agi://127.0.0.1:4583/voiceassist-live)
 same => n,Set(VA_EXTEN=${{EXTEN}})
 same => n,Goto(voiceassist-live-flow,s,1)

[va-test-target]
; a person the assistant transfers to: logs that it was reached and with which caller ID, then
; plays a tone the caller records ({TARGET_TONE_HZ:g} Hz, clear of the answers' tones and the
; questions' markers); 299 is always busy
exten => 299,1,Log(NOTICE,VATARGET ${{EXTEN}} busy for ${{CALLERID(num)}})
 same => n,Busy(3)
exten => _X.,1,Log(NOTICE,VATARGET ${{EXTEN}} reached by ${{CALLERID(num)}})
 same => n,Answer()
 same => n,Playback({QUESTIONS_DIR}/target-tone)
 same => n,Hangup()

[voiceassist-custom]
; the admin's hook after each turn; the tests log what the AGI set, base64-encoded so nothing is lost
exten => after-turn,1,Log(NOTICE,VATURN ${{UNIQUEID}} ${{VA_TURN}} ${{VOICEASSIST_STATUS}} ${{BASE64_ENCODE(${{VOICEASSIST_REPLY}})}} INJECTED=${{INJECTED}})
 same => n,Return()
"""


def make_target_tone() -> None:
    """The sound the rig's transfer target plays (``[va-test-target]``): 2 s of TARGET_TONE_HZ."""
    QUESTIONS_DIR.mkdir(parents=True, exist_ok=True)
    target = QUESTIONS_DIR / "target-tone.wav"
    if not target.exists():
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(target),
                        "synth", "2", "sine", str(TARGET_TONE_HZ), "vol", "0.4"], check=True)


def make_question(name: str, text: str, marker_hz: float, voice: str = "en-us") -> str:
    """A spoken question (espeak-ng's ``voice``, 8 kHz) preceded by a 300 ms marker tone; returns the sound name."""
    QUESTIONS_DIR.mkdir(parents=True, exist_ok=True)
    target = QUESTIONS_DIR / f"{name}.wav"
    if not target.exists():
        raw = QUESTIONS_DIR / f"{name}.espeak.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        marker = QUESTIONS_DIR / f"{name}.marker.wav"
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(marker),
                        "synth", "0.3", "sine", str(marker_hz), "vol", "0.4"], check=True)
        speech = QUESTIONS_DIR / f"{name}.8k.wav"
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(speech)], check=True)
        subprocess.run(["sox", str(marker), str(speech), str(target)], check=True)
        for tmp in (raw, marker, speech):
            tmp.unlink()
    return str(target.with_suffix(""))


@dataclass
class TestCall:
    rig: AsteriskRig
    key: str

    @property
    def heard_path(self) -> Path:
        return CALLS_DIR / f"{self.key}-in.wav"

    def dial(self) -> None:
        self.rig.cli(f"channel originate Local/{self.key}@va-test-entry extension {self.key}@va-test-caller")

    def wait(self, timeout: float = 120) -> None:
        """Wait (on AMI events) until both halves of the call are gone."""
        ami = self.rig.ami
        assert ami is not None
        ami.wait_for(lambda e: e.get("Event") == "UserEvent" and e.get("UserEvent") == "VATestDone"
                     and e.get("Key") == self.key, timeout)
        ami.wait_for(lambda e: e.get("Event") == "Hangup"
                     and e.get("Channel", "").startswith(f"Local/{self.key}@va-test-entry-")
                     and e.get("Channel", "").endswith(";2"), timeout)
        wait_for_complete_wav(self.heard_path)


def place_call(rig: AsteriskRig, key: str, questions: list[str], *, context: str = "voiceassist",
               caller_number: str = "", caller_name: bytes | str = b"", listen: int = 60,
               grace: int = 3, ending: str = "", dial: bool = True, caller_number_bytes: bytes = b"",
               agi: str = "", language: str = "") -> TestCall:
    """Call 8008 from a test caller who asks ``questions`` (sound names, or "silence") in turn.

    ``ending``: how the assistant finds the end of each question (VA_LISTEN: "silence" or "vad";
    empty = the dialplan's default). ``caller_number_bytes``: a caller number that may hold
    anything (set from base64, over ``caller_number``). ``agi``: the FastAGI URL of the
    ``va-test-agi`` context. ``language``: the 8008 side's VA_LANGUAGE (its CHANNEL(language)).
    ``dial=False`` only prepares the call (each setting is an
    ``asterisk -rx`` run, about 0.3 s); :meth:`TestCall.dial` then places it, so simultaneous calls start together instead of while
    the CLI is still busy preparing the next one.
    """
    CALLS_DIR.mkdir(parents=True, exist_ok=True)
    if isinstance(caller_name, str):
        caller_name = caller_name.encode()
    values = {
        "QUESTIONS": "&".join(questions) or "",
        "NUM": caller_number or key,
        "NAME64": base64.b64encode(caller_name).decode(),
        "CONTEXT": context,
        "LISTEN": str(listen),
        "GRACE": str(grace),
        "ENDING": ending,
        "LANGUAGE": language,
    }
    # Set only when given (each is an `asterisk -rx`; a key that uses them is not reused without).
    if caller_number_bytes:
        values["NUM64"] = base64.b64encode(caller_number_bytes).decode()
    if agi:
        values["AGI"] = agi
    for name, value in values.items():
        rig.cli(f"dialplan set global VAT_{key}_{name} {value}" if value else f"dialplan set global VAT_{key}_{name} \"\"")
    call = TestCall(rig, key)
    if dial:
        call.dial()
    return call


def wait_for_complete_wav(path: Path, timeout: float = 15) -> None:
    """MixMonitor's thread finalises the WAV header (RIFF and data sizes) after the hangup events;
    a header whose sizes match the file is the sign Asterisk has closed it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            header = path.read_bytes()[:44]
            if (len(header) == 44 and header[:4] == b"RIFF" and header[8:12] == b"WAVE"
                    and int.from_bytes(header[4:8], "little") + 8 == path.stat().st_size):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{path} was not completed by Asterisk within {timeout} s")


def tone_seconds(path: Path, frequency: float) -> float:
    """Seconds of ``path`` (8 kHz WAV) where a tone of ``frequency`` dominates."""
    import numpy as np

    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    window = rate // 20
    found = 0
    for start in range(0, len(pcm) - window, window):
        chunk = pcm[start:start + window]
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(window))) ** 2
        total = spectrum.sum()
        if total < 1e6:
            continue
        index = int(round(frequency * window / rate))
        if spectrum[max(0, index - 2): index + 3].sum() / total > 0.6:
            found += 1
    return found * window / rate


def sound_heard(path: Path, sound: Path) -> float:
    """How surely the caller's recording ``path`` (8 kHz WAV) holds the prompt ``sound`` (our 8 kHz
    .ulaw): the best normalised cross-correlation of the prompt's middle second with any stretch
    of the recording, 0..1 (Local channels pass μ-law unchanged: a prompt played is close to 1)."""
    import numpy as np

    from voiceassist.audio.conversion import ulaw_to_pcm

    with wave.open(str(path), "rb") as wav:
        heard = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    prompt = np.frombuffer(ulaw_to_pcm(sound.read_bytes(), 8000, 8000), dtype="<i2").astype(np.float64)
    middle = len(prompt) // 2
    template = prompt[max(0, middle - 4000): middle + 4000]
    template = template - template.mean()
    template /= np.linalg.norm(template) or 1.0
    if len(heard) < len(template):
        return 0.0
    size = 1 << int(np.ceil(np.log2(len(heard) + len(template))))
    correlation = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(template, size)), size)
    correlation = correlation[: len(heard) - len(template) + 1]
    energy = np.concatenate(([0.0], np.cumsum(heard ** 2)))
    window = np.sqrt(np.maximum(energy[len(template):] - energy[: -len(template)], 1e-9))
    return float(np.max(correlation / np.maximum(window, 1.0)))


def stored_call(caller_number: str, *, wait_for_end: bool = True, timeout: float = 30) -> tuple[dict, list[dict]]:
    """The rig database's call from ``caller_number`` and its turns, once its end is stored (the
    h extension ran, or the real-time route stored it), or at once with ``wait_for_end=False``."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(SHARED / "voiceassist.db") as db:
            db.row_factory = sqlite3.Row
            call = db.execute("SELECT * FROM voiceassist_calls WHERE caller_number = ?", (caller_number,)).fetchone()
            turns = [] if call is None else [dict(r) for r in db.execute(
                "SELECT * FROM voiceassist_turns WHERE call_id = ? ORDER BY turn_number", (call["id"],))]
        if call is not None and (call["ended_at"] or not wait_for_end):
            return dict(call), turns
        if time.monotonic() > deadline:
            raise AssertionError(f"no ended call for caller {caller_number}: {call and dict(call)}")
        time.sleep(0.2)
