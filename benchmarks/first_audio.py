"""End of the caller's speech to the first answer audio on the channel, flow against flow.

    python -m benchmarks.first_audio [--calls N]        (as root: it runs the Asterisk rig)

Real Asterisk 22 (the test rig's chroot), the real SDKs, and emulated providers at fixed
latencies: STT 400 ms, LLM first token 300 ms then 40 tokens/s, TTS first byte 300 ms. The same
three-sentence reply in every call. Each flow answers ``--calls`` calls in turn, in one run:

* design card: process AGI, MixMonitor + WaitForSilence 2 s, whole reply, one answer file
  converted by ffmpeg and played by the dialplan (Playback);
* FastAGI, 2 s silence, one file; FastAGI, 2 s silence, pipelined (the reply streamed, each
  sentence synthesized, converted in-process and played with STREAM FILE as soon as it is ready);
* FastAGI, pipelined, end of question by the EAGI voice activity detector (700 ms);
* process AGI, pipelined, VAD: the listener prepares the turn while the caller speaks and answers.

Times come from Asterisk's own AMI event timestamps: the caller's Playback of the question ends
(end of speech), the 8008 side knows the question is over (Set(VA_STOPPED) after StopMixMonitor,
or the listener's VA_HEARD), the AGI starts, and the answer starts playing (Playback of the answer
file, or the first STREAM FILE); the per-stage columns come from the stored turn. "Provider time"
is what the emulated providers must take on the path to the first audio; "overhead" is everything
else after the end of the question was found. Then six questions with pauses inside them are
asked with each end-of-question method, counting the ones cut off.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
from harness.emulators.gemini import words
from harness.helpers import conf_text
from harness.rig.asterisk import SHARED, AsteriskRig, log
from harness.rig.calls import RIG_DIALPLAN, make_question, place_call

STT_S, LLM_FIRST_S, TOKENS_PER_S, TTS_S = 0.4, 0.3, 40.0, 0.3
REPLY = ("Our office is open Monday to Friday from eight in the morning to six in the evening. "
         "On Saturdays we open from nine until one in the afternoon. "
         "We are closed on Sundays and on public holidays.")
FIRST_SENTENCE = REPLY.split(". ")[0] + "."
FASTAGI_PORT = 4573
FLOWS = [  # label, context, playback, end of the question (VA_LISTEN), answer conversion ([audio] converter)
    ("design card: process AGI, ffmpeg, 2 s", "voiceassist", "file", "silence", "ffmpeg"),
    ("FastAGI, file, 2 s silence", "voiceassist-fastagi", "file", "silence", "auto"),
    ("FastAGI, pipelined, 2 s silence", "voiceassist-fastagi", "pipelined", "silence", "auto"),
    ("FastAGI, pipelined, VAD 700 ms (best)", "voiceassist-fastagi", "pipelined", "vad", "auto"),
    ("process AGI, pipelined, VAD 700 ms", "voiceassist", "pipelined", "vad", "auto"),
]
# Questions with natural pauses (seconds of silence between the parts) for the cut-off count.
PAUSED_QUESTIONS = [
    ("I need a plumber", 0.4, "for my kitchen sink"),
    ("Can you tell me", 0.5, "when you open", 0.3, "on Saturday"),
    ("My boiler is broken", 0.6, "and the house is cold"),
    ("Hello", 0.7, "I would like to book a visit"),
    ("How much is it", 0.3, "for an emergency call out", 0.4, "at night"),
    ("Where is your office", 0.5, "exactly"),
]


@dataclass
class Measurement:
    speech_end_to_audio: float
    silence_detection: float
    agi_to_audio: float
    overhead: float
    agi_start: float  # end detected -> the turn starts in Python (process spawn + imports, or connect)
    stt: float
    llm_first: float
    tts_and_convert: float  # LLM's first words -> first answer audio handed to Asterisk
    playback_start: float  # handed to Asterisk -> Asterisk starts playing it


def provider_seconds(playback: str) -> float:
    """What the emulated providers take, at best, before the first answer audio exists."""
    text = REPLY if playback == "file" else FIRST_SENTENCE
    return STT_S + LLM_FIRST_S + (len(words(text)) - 1) / TOKENS_PER_S + TTS_S


def event_time(events: list[dict[str, str]], match) -> float:  # type: ignore[no-untyped-def]
    for event in events:
        if match(event):
            return float(event["Timestamp"])
    raise LookupError("event not found among: " + "; ".join(
        f"{e.get('Event')} {e.get('Application', '')}({e.get('AppData', '')[:60]}) {e.get('Command', '')[:40]}"
        for e in events))


def end_found(assistant: list[dict[str, str]], ending: str) -> float:
    """When the 8008 side knew the question was over."""
    if ending == "vad":  # the EAGI listener's SET VARIABLE VA_HEARD NOISE
        return event_time(assistant, lambda e: e.get("Event") == "VarSet" and e.get("Variable") == "VA_HEARD"
                          and e.get("Value") == "NOISE")
    # Set(VA_STOPPED=...) right after StopMixMonitor
    return event_time(assistant, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "Set"
                      and e.get("AppData", "").startswith("VA_STOPPED="))


def measure(rig: AsteriskRig, key: str, playback: str, ending: str) -> Measurement:
    events = [e for e in rig.ami.events if "Timestamp" in e and f"Local/{key}@va-test-entry-" in e.get("Channel", "")]
    caller = [e for e in events if e["Channel"].endswith(";1")]
    assistant = [e for e in events if e["Channel"].endswith(";2")]
    # The caller's dialplan moves on to Set(I=$[${I} + 1]) (shown substituted: I=2) the moment its
    # Playback of the question ends.
    speech_end = event_time(caller, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "Set"
                            and e.get("AppData", "") == "I=2")
    detected = end_found(assistant, ending)
    try:
        agi = event_time(assistant, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "AGI"
                         and ",turn," in e.get("AppData", ""))
    except LookupError:
        agi = detected  # process AGI + VAD: the listener answers in its own process, no AGI() runs
    if playback == "file":
        # ExecIf(...?Playback(<answer>)): Playback runs inside ExecIf, so the event is ExecIf's.
        audio = event_time(assistant, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "ExecIf"
                           and "Playback(" in e.get("AppData", "") and "/answer-" in e.get("AppData", ""))
    else:
        audio = event_time(assistant, lambda e: e.get("Event") == "AGIExecStart"
                           and e.get("Command", "").startswith("STREAM FILE"))
    turn = turn_row(key)
    turn_start = turn["started_epoch"]
    handed = turn_start + turn["first_audio_ms"] / 1000  # the first answer audio handed to Asterisk
    stt = turn["stt_ms"] / 1000
    llm_first = (turn["llm_first_ms"] or turn["llm_ms"]) / 1000
    return Measurement(audio - speech_end, detected - speech_end, audio - agi,
                       audio - detected - provider_seconds(playback),
                       agi_start=turn_start - detected, stt=stt, llm_first=llm_first,
                       tts_and_convert=turn["first_audio_ms"] / 1000 - stt - llm_first,
                       playback_start=audio - handed)


def turn_row(key: str) -> dict:
    import sqlite3

    deadline = time.monotonic() + 20
    while True:
        with sqlite3.connect(SHARED / "voiceassist.db") as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT t.* FROM voiceassist_turns t JOIN voiceassist_calls c ON c.id = t.call_id "
                             "WHERE c.caller_number = ? AND t.turn_number = 1", (key,)).fetchone()
        if row is not None:
            found = dict(row)
            started = dt.datetime.fromisoformat(str(found["started_at"]))
            found["started_epoch"] = started.replace(tzinfo=dt.timezone.utc).timestamp()
            return found
        if time.monotonic() > deadline:
            raise LookupError(f"no stored turn for caller {key}")
        time.sleep(0.2)


def start_fastagi(config_path: Path) -> subprocess.Popen[str]:
    server = subprocess.Popen([sys.executable, "-m", "voiceassist", "--config", str(config_path), "serve",
                               "--port", str(FASTAGI_PORT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if "listening" in line:
            return server
    raise RuntimeError("the FastAGI server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5, help="calls per flow (default 5)")
    parser.add_argument("--cutoff-calls", type=int, default=1, help="calls per paused question and method (default 1)")
    args = parser.parse_args(argv)
    emulators = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
                 "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    emulators["speech"].latency = STT_S
    emulators["gemini"].latency = LLM_FIRST_S
    emulators["gemini"].tokens_per_second = TOKENS_PER_S
    emulators["gemini"].reply = lambda body: REPLY
    emulators["tts"].latency = TTS_S
    emulators["tts"].seconds = 0.5
    rig = AsteriskRig()
    rig.build()
    rig.mount()
    server = None
    results: dict[str, list[Measurement]] = {}
    skipped: list[str] = []
    try:
        for stale in ("voiceassist.db", "voiceassist.db-wal", "voiceassist.db-shm", "calls"):
            path = SHARED / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        rig.install_package()
        rig.configure(conf_text(emulators, data_dir=SHARED), RIG_DIALPLAN)
        rig.start()
        question = make_question("bench-hours", "What are your opening hours?", 2200)
        for number, (label, context, playback, ending, converter) in enumerate(FLOWS):
            conf = conf_text(emulators, data_dir=SHARED, extra=f"[general]\nplayback = {playback}\nmax_turns = 1\n"
                                                                f"[audio]\nconverter = {converter}\n")
            rig.write_voiceassist_conf(conf)
            if context.endswith("fastagi"):
                config_path = SHARED / "bench-fastagi.conf"
                config_path.write_text(conf)
                server = start_fastagi(config_path)
            log(f"{label}: {args.calls} calls")
            for call_number in range(args.calls):
                key = f"9{number}{call_number:02d}{int(time.time()) % 100:02d}"
                call = place_call(rig, key, [question], context=context, listen=8, grace=5, ending=ending)
                call.wait(timeout=120)
                try:
                    results.setdefault(label, []).append(measure(rig, key, playback, ending))
                except LookupError as exc:  # e.g. the test caller left early: report it, keep going
                    skipped.append(f"{label} call {key}: {str(exc)[:300]}")
            if server is not None and number < len(FLOWS) - 1:
                server.terminate()
                server.wait(30)
                server = None
        cutoffs = end_of_question(rig, args.cutoff_calls)
    finally:
        if server is not None:
            server.terminate()
        rig.stop()
        rig.unmount()
        for emulator in emulators.values():
            emulator.close()
    raw = SHARED / "first-audio-results.json"
    raw.write_text(json.dumps({label: [vars(m) for m in rows] for label, rows in results.items()}, indent=1))
    report(results, args.calls)
    report_cutoffs(cutoffs)
    for line in skipped:
        print(f"skipped (incomplete events): {line}")
    print(f"\nraw measurements: {raw}")
    return 0


def report(results: dict[str, list[Measurement]], calls: int) -> None:
    print(f"\nEnd of the caller's speech -> first answer audio on the channel (median of up to {calls} calls, ms)")
    print(f"emulated providers: STT {STT_S * 1000:.0f}, LLM first token {LLM_FIRST_S * 1000:.0f} + "
          f"{TOKENS_PER_S:.0f} tokens/s, TTS {TTS_S * 1000:.0f}; reply {len(words(REPLY))} words, "
          f"first sentence {len(words(FIRST_SENTENCE))}\n")
    header = (f"{'flow':38} {'speech end->audio':>17} {'providers':>9} {'overhead':>8} | {'end found':>9} "
              f"{'AGI start':>9} {'STT':>5} {'LLM 1st':>7} {'->audio':>7} {'play':>5}")
    print(header)
    print("-" * len(header))
    baseline = None
    for label, playback in ((label, playback) for label, _, playback, _, _ in FLOWS):
        rows = results.get(label, [])
        if not rows:
            continue
        m = {name: statistics.median(getattr(r, name) for r in rows) * 1000 for name in Measurement.__dataclass_fields__}
        baseline = baseline or m["speech_end_to_audio"]
        print(f"{label:38} {m['speech_end_to_audio']:17.0f} {provider_seconds(playback) * 1000:9.0f} "
              f"{m['overhead']:8.0f} | {m['silence_detection']:9.0f} {m['agi_start']:9.0f} {m['stt']:5.0f} "
              f"{m['llm_first']:7.0f} {m['tts_and_convert']:7.0f} {m['playback_start']:5.0f}"
              f"   ({m['speech_end_to_audio'] / baseline:.2f}x)")
    print("\nend found: the dialplan knows the question is over (after the caller's last word); AGI start: "
          "until the turn runs in Python (process start + imports, or FastAGI connect); STT, LLM 1st: as "
          "measured by the turn (provider 400 / 300 ms); ->audio: rest of the turn until the first answer "
          "audio is handed to Asterisk (first sentence's tokens, TTS, conversion, files); play: until "
          "Asterisk plays it (file mode: process exit / session end + Playback).")


def end_of_question(rig: AsteriskRig, calls: int) -> dict[str, list[float | None]]:
    """For each paused question and each method: seconds from the caller's last word to the end
    found, or None when the question was cut off (the end found before the caller finished)."""
    found: dict[str, list[float | None]] = {}
    for index, parts in enumerate(PAUSED_QUESTIONS):
        sound = paused_question(f"paused-{index}", parts)
        for ending in ("silence", "vad"):
            for repeat in range(calls):
                key = f"8{index}{repeat}{0 if ending == 'silence' else 1}{int(time.time()) % 100:02d}"
                call = place_call(rig, key, [sound], context="voiceassist-fastagi", listen=6, grace=5, ending=ending)
                call.wait(timeout=120)
                events = [e for e in rig.ami.events if "Timestamp" in e
                          and f"Local/{key}@va-test-entry-" in e.get("Channel", "")]
                try:
                    speech_end = event_time([e for e in events if e["Channel"].endswith(";1")],
                                            lambda e: e.get("Event") == "Newexten" and e.get("AppData", "") == "I=2")
                    detected = end_found([e for e in events if e["Channel"].endswith(";2")], ending)
                except LookupError:
                    continue
                found.setdefault(ending, []).append(detected - speech_end if detected >= speech_end else None)
    return found


def paused_question(name: str, parts: tuple) -> str:
    """espeak-ng parts (trimmed) with the given pauses between them, 8 kHz WAV; returns the sound name."""
    from harness.rig.calls import QUESTIONS_DIR

    QUESTIONS_DIR.mkdir(parents=True, exist_ok=True)
    target = QUESTIONS_DIR / f"{name}.wav"
    pieces = []
    for number, part in enumerate(parts):
        piece = QUESTIONS_DIR / f"{name}.{number}.wav"
        if isinstance(part, float):
            subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(piece), "trim", "0", str(part)],
                           check=True)
        else:
            raw = QUESTIONS_DIR / f"{name}.{number}.raw.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), part], check=True)
            subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(piece), "silence", "1", "0.02",
                            "1%", "reverse", "silence", "1", "0.02", "1%", "reverse"], check=True)
            raw.unlink()
        pieces.append(str(piece))
    subprocess.run(["sox", *pieces, str(target)], check=True)
    for piece in pieces:
        Path(piece).unlink()
    return str(target.with_suffix(""))


def report_cutoffs(found: dict[str, list[float | None]]) -> None:
    print(f"\nEnd of the question on {len(PAUSED_QUESTIONS)} spoken questions with pauses of 0.3-0.7 s "
          "inside them (FastAGI, pipelined)")
    for ending, label in (("silence", "WaitForSilence 2000 ms"), ("vad", "EAGI + WebRTC VAD 700 ms")):
        rows = found.get(ending, [])
        kept = [r for r in rows if r is not None]
        if not rows:
            continue
        median = f"{statistics.median(kept) * 1000:.0f} ms" if kept else "-"
        print(f"{label:26} cut off {len(rows) - len(kept)} of {len(rows)}; last word -> end found: median {median}")


if __name__ == "__main__":
    sys.exit(main())
