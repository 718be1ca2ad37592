"""Real-time conversation against the AGI flow: end of speech -> first answer audio at the caller,
barge-in reaction, false barge-ins, in one run.

    python -m benchmarks.live [--calls N] [--interruptions N] [--noise-calls N]   (as root: the rig)

Real Asterisk 22 (the test rig's chroot), the real SDKs, emulated providers at fixed latencies:
streaming speech-to-text final 150 ms after the speech ends (Google's gRPC stream; the AGI flow's
batch recognition 400 ms), the chat model's first token 300 ms then 40 tokens/s, text-to-speech
first byte 200 ms. The same three-sentence reply in every call. Flows, interleaved call by call:

* real-time over AudioSocket (``[va-live]``), real-time over Asterisk's WebSocket channel
  (``[va-live-ws]``);
* today's best AGI flow: FastAGI, pipelined, end of question by the EAGI VAD (700 ms).

Everything is measured at the caller, in one timeline: the caller's MixMonitor mix (what it
said and what it heard). The question's end is its marker tone's start plus the spoken
question's length; the answer is a tone naming its sentence (harness/emulators/openai_api.py).
"Providers" is what the emulated providers must take on the path to the first audio; "overhead"
the rest (for the real-time flows the end silence of 500 ms runs alongside: the answer is
prepared on the recogniser's final words and released when the silence is over).

Barge-in: the caller speaks over a long answer 1 s into it (twice per call); reaction = the
caller's speech onset to the answer's audio stopping in the mix. False barge-ins: a cough, a
click and the answer's own tone at echo level (-20 dB) over the answer; any interruption counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import wave
from dataclasses import dataclass

import numpy as np

from harness.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
from harness.emulators.gemini import words
from harness.emulators.openai_api import tone_for
from harness.emulators.speech_grpc import SpeechGrpcEmulator
from harness.helpers import conf_text
from harness.rig.asterisk import SHARED, AsteriskRig, log
from harness.rig.calls import CALLS_DIR, QUESTIONS_DIR, RIG_DIALPLAN, make_question, place_call
from harness.servers import FastAGIProcess
from harness.speech import speech_end_seconds, tone_spans

STREAM_FINAL_S, BATCH_STT_S, LLM_FIRST_S, TOKENS_PER_S, TTS_FIRST_S = 0.15, 0.4, 0.3, 40.0, 0.2
END_SILENCE_S, VAD_END_S = 0.5, 0.7
REPLY = ("Our office is open Monday to Friday from eight in the morning to six in the evening. "
         "On Saturdays we open from nine until one in the afternoon. "
         "We are closed on Sundays and on public holidays.")
FIRST_SENTENCE = REPLY.split(". ")[0] + "."
QUESTION, MARKER_HZ = "What are your opening hours?", 2200
FLOWS = [  # label, rig context, FastAGI port, extra config, AGI ending
    ("real-time, AudioSocket", "va-live", 4579, "[live]\ntransport = audiosocket\naudiosocket_port = 4580\n", ""),
    ("real-time, WebSocket", "va-live-ws", 4578,
     "[live]\ntransport = websocket\nwebsocket_port = 4581\nwebsocket_client = voiceassist\n", ""),
    ("AGI: FastAGI, pipelined, VAD 700 ms", "voiceassist-fastagi", 4573, "[general]\nplayback = pipelined\n", "vad"),
]


@dataclass
class FirstAudio:
    seconds: float          # end of the caller's speech -> first answer audio, at the caller
    stored: dict            # the turn's own timings (ms)


def provider_seconds(agi: bool) -> float:
    """The emulated providers' share of the path to the first audio."""
    first_sentence = (len(words(FIRST_SENTENCE)) - 1) / TOKENS_PER_S
    return (BATCH_STT_S if agi else STREAM_FINAL_S) + LLM_FIRST_S + first_sentence + TTS_FIRST_S


def read_mix(key: str) -> tuple[np.ndarray, int]:
    with wave.open(str(CALLS_DIR / f"{key}-heard.wav"), "rb") as wav:
        rate = wav.getframerate()
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64), rate


def first_audio(key: str, question_pcm: bytes) -> float:
    samples, rate = read_mix(key)
    pcm = samples.astype("<i2").tobytes()
    markers = tone_spans(pcm, rate, MARKER_HZ, min_seconds=0.1)
    if not markers:
        raise LookupError(f"call {key}: the question's marker tone is not in the mix")
    speech_end = markers[0][0] + speech_end_seconds(question_pcm, 8000)
    answers = [s for s in tone_spans(pcm, rate, tone_for(FIRST_SENTENCE), min_seconds=0.1) if s[0] > speech_end]
    if not answers:
        raise LookupError(f"call {key}: no answer after the question")
    return answers[0][0] - speech_end


def caller_speech_onsets(samples: np.ndarray, rate: int, tone_hz: float, after: float) -> list[float]:
    """Times (s) after ``after`` where broadband sound (the caller's voice) starts over the tone."""
    window = rate // 100
    onsets, speaking = [], False
    for index in range(int(after * rate), len(samples) - window, window):
        chunk = samples[index:index + window]
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(window))) ** 2
        total = spectrum.sum()
        tone_bin = int(round(tone_hz * window / rate))
        other = total - spectrum[max(0, tone_bin - 2): tone_bin + 3].sum()
        voice = total > 2e6 and other / total > 0.4
        if voice and not speaking:
            onsets.append(index / rate)
        speaking = voice if voice else (speaking and other > 2e5)
    return onsets


def tone_stops(samples: np.ndarray, rate: int, tone_hz: float, since: float) -> float:
    """When the answer's tone stops after ``since``: its own energy (not its share of the mix, which
    the caller's voice over it lowers) gone for 60 ms."""
    window = rate // 100
    t = np.arange(window) / rate
    reference = np.abs(np.fft.rfft(np.sin(2 * np.pi * tone_hz * t) * 9000 * np.hanning(window))) ** 2
    tone_bin = int(round(tone_hz * window / rate))
    threshold = reference[max(0, tone_bin - 2): tone_bin + 3].sum() * 0.1  # 10 dB below the answer's level
    quiet = 0
    index = int(since * rate)
    last_on = since
    while index < len(samples) - window and quiet < 6:
        spectrum = np.abs(np.fft.rfft(samples[index:index + window] * np.hanning(window))) ** 2
        if spectrum[max(0, tone_bin - 2): tone_bin + 3].sum() > threshold:
            last_on, quiet = (index + window) / rate, 0
        else:
            quiet += 1
        index += window
    return last_on


def turns_of(key: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(SHARED / "voiceassist.db") as db:
            db.row_factory = sqlite3.Row
            call = db.execute("SELECT * FROM voiceassist_calls WHERE caller_number = ?", (key,)).fetchone()
            if call is not None and call["ended_at"]:
                return [dict(r) for r in db.execute("SELECT * FROM voiceassist_turns WHERE call_id = ? "
                                                    "ORDER BY turn_number", (call["id"],))]
        if time.monotonic() > deadline:
            raise LookupError(f"call {key} has no stored end")
        time.sleep(0.2)


def speech_sound(name: str, text: str) -> tuple[str, bytes]:
    """Trimmed espeak-ng speech with no marker tone (a caller interrupting), 8 kHz WAV."""
    QUESTIONS_DIR.mkdir(parents=True, exist_ok=True)
    target = QUESTIONS_DIR / f"{name}.wav"
    raw = QUESTIONS_DIR / f"{name}.raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(target), "silence", "1", "0.02", "1%",
                    "reverse", "silence", "1", "0.02", "1%", "reverse"], check=True)
    raw.unlink()
    with wave.open(str(target), "rb") as wav:
        return str(target.with_suffix("")), wav.readframes(wav.getnframes())


def noise_sounds() -> dict[str, str]:
    rng = np.random.default_rng(7)
    t = np.arange(int(1.5 * 8000)) / 8000
    sounds = {
        "cough": np.concatenate([np.zeros(800), rng.normal(0, 6000, 1200) * np.hanning(1200), np.zeros(800)]),
        "click": np.concatenate([np.zeros(800), [20000, -20000, 12000], np.zeros(800)]),
        "echo": np.sin(2 * np.pi * tone_for(FIRST_SENTENCE) * t) * 9000 * 10 ** (-20 / 20),
    }
    names = {}
    for name, samples in sounds.items():
        path = QUESTIONS_DIR / f"bench-{name}.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
        names[name] = str(path.with_suffix(""))
    return names


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5, help="first-audio calls per flow (default 5)")
    parser.add_argument("--interruptions", type=int, default=20, help="barge-ins per transport (default 20)")
    parser.add_argument("--noise-calls", type=int, default=3, help="calls with noise over the answer per transport")
    args = parser.parse_args(argv)
    emulators = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
                 "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    grpc = SpeechGrpcEmulator()
    grpc.final_delay = STREAM_FINAL_S
    grpc.transcripts[MARKER_HZ] = QUESTION
    emulators["speech"].latency = BATCH_STT_S
    emulators["speech"].transcripts = {MARKER_HZ: QUESTION}
    emulators["gemini"].latency = LLM_FIRST_S
    emulators["gemini"].tokens_per_second = TOKENS_PER_S
    emulators["gemini"].reply = lambda body: REPLY
    emulators["tts"].latency = TTS_FIRST_S
    emulators["tts"].seconds = 1.0
    rig = AsteriskRig()
    rig.build()
    rig.mount()
    servers: list[FastAGIProcess] = []
    first: dict[str, list[FirstAudio]] = {}
    reactions: dict[str, list[float]] = {}
    false_barge: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    try:
        for stale in ("voiceassist.db", "voiceassist.db-wal", "voiceassist.db-shm", "calls"):
            path = SHARED / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        rig.install_package()
        base = conf_text(emulators, data_dir=SHARED, extra="[general]\nmax_turns = 1\n")
        rig.configure(base, RIG_DIALPLAN)
        rig.start()
        for label, _, port, extra, ending in FLOWS:
            streaming = "" if ending else (f"[stt]\nprovider = google_speech\n[google_speech]\n"
                                           f"endpoint = {grpc.endpoint}\n")
            path = SHARED / f"bench-live-{port}.conf"
            path.write_text(conf_text(emulators, data_dir=SHARED, extra=f"{streaming}[llm]\nprovider = gemini\n"
                                                                        f"[tts]\nprovider = openai_tts\n{extra}"))
            servers.append(FastAGIProcess(path, port=port))
        question = make_question("bench-live-hours", QUESTION, MARKER_HZ)
        with wave.open(question + ".wav", "rb") as wav:
            question_pcm = wav.readframes(wav.getnframes())
        log(f"first audio: {args.calls} calls per flow, interleaved")
        for number in range(args.calls):
            for index, (label, context, _, _, ending) in enumerate(FLOWS):
                key = f"6{index}{number:02d}{int(time.time()) % 100:02d}"
                call = place_call(rig, key, [question], context=context, listen=6, grace=5, ending=ending)
                call.wait(timeout=120)
                try:
                    seconds = first_audio(key, question_pcm)
                    stored = turns_of(key)[0]
                    first.setdefault(label, []).append(FirstAudio(seconds, stored))
                except (LookupError, IndexError) as exc:
                    problems.append(f"{label}: {exc}")
        emulators["tts"].seconds = 6.0
        barge, _ = speech_sound("bench-barge", "Sorry, one more thing please")
        noises = noise_sounds()
        for flow_number, (label, context, _, _, ending) in enumerate(FLOWS):
            if ending:
                continue
            log(f"barge-in: {args.interruptions} interruptions, {label}")
            measured: list[float] = []
            attempt = 0
            while len(measured) < args.interruptions and attempt < args.interruptions:
                attempt += 1
                key = f"7{flow_number}{attempt:02d}{int(time.time()) % 100:02d}"
                call = place_call(rig, key, [question, f"~1~{barge}", f"~1~{barge}"], context=context,
                                  listen=3, grace=5)
                call.wait(timeout=120)
                samples, rate = read_mix(key)
                pcm = samples.astype("<i2").tobytes()
                # Each answer starts with the first sentence's tone; where the caller's voice
                # starts over it, the tone must stop.
                tone = tone_for(FIRST_SENTENCE)
                for start, end in tone_spans(pcm, rate, tone, min_seconds=0.1):
                    onsets = [o for o in caller_speech_onsets(samples, rate, tone, start) if o < end + 0.1]
                    if onsets:
                        measured.append(tone_stops(samples, rate, tone, onsets[0]) - onsets[0])
            reactions[label] = measured
            log(f"false barge-in: {args.noise_calls} calls with a cough, a click and echo, {label}")
            interrupted = total = 0
            for number in range(args.noise_calls):
                key = f"5{number}{flow_number}{int(time.time()) % 100:02d}"
                over = [f"~0.5~{noises['cough']}", f"~0.3~{noises['click']}", f"~0.2~{noises['echo']}"]
                call = place_call(rig, key, [question, *over], context=context, listen=2, grace=5)
                call.wait(timeout=120)
                for turn in turns_of(key):
                    total += 1
                    # The caller hanging up mid-answer also marks the turn interrupted: not a barge-in.
                    interrupted += bool(turn["interrupted"]) and turn["error"] != "caller hung up during the answer"
            false_barge[label] = (interrupted, total)
    finally:
        for server in servers:
            server.stop()
        rig.stop()
        rig.unmount()
        grpc.close()
        for emulator in emulators.values():
            emulator.close()
    raw = SHARED / "live-results.json"
    raw.write_text(json.dumps({"first_audio": {k: [vars(m) for m in v] for k, v in first.items()},
                               "barge_in": reactions, "false_barge_in": false_barge}, indent=1, default=str))
    report(first, reactions, false_barge, args.calls)
    for line in problems:
        print(f"skipped: {line}")
    print(f"\nraw measurements: {raw}")
    return 0


def report(first: dict[str, list[FirstAudio]], reactions: dict[str, list[float]],
           false_barge: dict[str, tuple[int, int]], calls: int) -> None:
    print(f"\nEnd of the caller's speech -> first answer audio at the caller (median of up to {calls} calls, ms)")
    print(f"emulated providers: streaming STT final {STREAM_FINAL_S * 1000:.0f} after the speech (batch STT "
          f"{BATCH_STT_S * 1000:.0f}), LLM first token {LLM_FIRST_S * 1000:.0f} + {TOKENS_PER_S:.0f} tokens/s, TTS "
          f"first byte {TTS_FIRST_S * 1000:.0f}; first sentence {len(words(FIRST_SENTENCE))} words\n")
    header = (f"{'flow':38} {'median':>7} {'p90':>6} {'providers':>9} {'overhead':>8} | {'STT':>5} {'LLM 1st':>7} "
              f"{'TTS 1st':>7} {'stored':>7}")
    print(header)
    print("-" * len(header))
    # The ratio compares the turns' own measure (stored: end of speech -> first audio handed to the
    # media leg or Asterisk). The caller-side median is exact only where the line carries audio
    # all along (AudioSocket sends silence frames): a Local channel that carries no frames while
    # nobody speaks leaves that time out of the caller's MixMonitor recording.
    def stored_median(rows: list[FirstAudio]) -> float | None:
        found = [m.stored.get("speech_to_audio_ms") for m in rows if m.stored.get("speech_to_audio_ms") is not None]
        return statistics.median(found) if found else None

    agi = stored_median(first.get(FLOWS[-1][0], []))
    for label, _, _, _, ending in FLOWS:
        rows = first.get(label, [])
        if not rows:
            continue
        values = [m.seconds for m in rows]
        median = statistics.median(values)
        providers = provider_seconds(bool(ending))
        def stored(name: str) -> float:
            found = [m.stored.get(f"{name}_ms") for m in rows if m.stored.get(f"{name}_ms") is not None]
            return statistics.median(found) if found else float("nan")
        own = stored_median(rows)
        ratio = f"({own / agi:.2f}x)" if agi and own else ""
        print(f"{label:38} {median * 1000:7.0f} {percentile(values, 0.9) * 1000:6.0f} {providers * 1000:9.0f} "
              f"{(median - providers - (VAD_END_S if ending else 0)) * 1000:8.0f} | {stored('stt'):5.0f} "
              f"{stored('llm_first'):7.0f} {stored('tts'):7.0f} {stored('speech_to_audio'):7.0f}  {ratio}")
    print("\nproviders: what the emulated providers take on the path to the first audio; overhead: the rest "
          "(the AGI flow's VAD end silence of 700 ms taken off; the real-time flows' 500 ms end silence runs "
          "while the answer is prepared); STT, LLM 1st, TTS 1st, stored: the turn's own timings (stored = its "
          "end of speech -> first audio handed to the media leg or Asterisk).")
    print("\nBarge-in: the caller's speech onset -> the answer stops at the caller (ms)")
    for label, values in reactions.items():
        if values:
            print(f"{label:38} n {len(values):3d}  p50 {percentile(values, 0.5) * 1000:5.0f}  "
                  f"p95 {percentile(values, 0.95) * 1000:5.0f}  max {max(values) * 1000:5.0f}")
    print("\nFalse barge-ins (a cough, a click and the answer's echo at -20 dB over each answer)")
    for label, (interrupted, total) in false_barge.items():
        print(f"{label:38} {interrupted} of {total} answers interrupted")


if __name__ == "__main__":
    sys.exit(main())
