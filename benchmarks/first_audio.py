"""End of the caller's speech to the first answer audio on the channel, flow against flow.

    python -m benchmarks.first_audio [--calls N]        (as root: it runs the Asterisk rig)

Real Asterisk 22 (the test rig's chroot), the real SDKs, and emulated providers at fixed
latencies: STT 400 ms, LLM first token 300 ms then 40 tokens/s, TTS first byte 300 ms. The same
three-sentence reply in every call. Each flow answers ``--calls`` calls in turn, in one run:

* design card: process AGI, whole reply, one answer file played by the dialplan (Playback);
* FastAGI, whole reply, one file;
* FastAGI, pipelined: the reply streamed, each sentence synthesized and played (STREAM FILE)
  as soon as it is ready;
* process AGI, pipelined.

Times come from Asterisk's own AMI event timestamps: the caller's Playback of the question ends
(end of speech), StopMixMonitor (the silence detector decided the question is over), the AGI
starts, and the answer starts playing (Playback of the answer file, or the first STREAM FILE).
"Provider time" is what the emulated providers must take on the path to the first audio;
"overhead" is everything else after the end of the question was detected.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
from tests.emulators.gemini import words
from tests.helpers import conf_text
from tests.rig.asterisk import SHARED, AsteriskRig, log
from tests.rig.calls import RIG_DIALPLAN, make_question, place_call

STT_S, LLM_FIRST_S, TOKENS_PER_S, TTS_S = 0.4, 0.3, 40.0, 0.3
REPLY = ("Our office is open Monday to Friday from eight in the morning to six in the evening. "
         "On Saturdays we open from nine until one in the afternoon. "
         "We are closed on Sundays and on public holidays.")
FIRST_SENTENCE = REPLY.split(". ")[0] + "."
FASTAGI_PORT = 4573
FLOWS = [
    ("design card: process AGI, one file", "voiceassist", "file"),
    ("FastAGI, one file", "voiceassist-fastagi", "file"),
    ("FastAGI, pipelined sentences", "voiceassist-fastagi", "pipelined"),
    ("process AGI, pipelined sentences", "voiceassist", "pipelined"),
]


@dataclass
class Measurement:
    speech_end_to_audio: float
    silence_detection: float
    agi_to_audio: float
    overhead: float


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


def measure(rig: AsteriskRig, key: str, playback: str) -> Measurement:
    events = [e for e in rig.ami.events if "Timestamp" in e and f"Local/{key}@va-test-entry-" in e.get("Channel", "")]
    caller = [e for e in events if e["Channel"].endswith(";1")]
    assistant = [e for e in events if e["Channel"].endswith(";2")]
    # The caller's dialplan moves on to Set(I=$[${I} + 1]) (shown substituted: I=2) the moment its
    # Playback of the question ends.
    speech_end = event_time(caller, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "Set"
                            and e.get("AppData", "") == "I=2")
    detected = event_time(assistant, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "StopMixMonitor")
    agi = event_time(assistant, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "AGI"
                     and ",turn," in e.get("AppData", ""))
    if playback == "file":
        # ExecIf(...?Playback(<answer>)): Playback runs inside ExecIf, so the event is ExecIf's.
        audio = event_time(assistant, lambda e: e.get("Event") == "Newexten" and e.get("Application") == "ExecIf"
                           and "Playback(" in e.get("AppData", "") and "/answer-" in e.get("AppData", ""))
    else:
        audio = event_time(assistant, lambda e: e.get("Event") == "AGIExecStart"
                           and e.get("Command", "").startswith("STREAM FILE"))
    return Measurement(audio - speech_end, detected - speech_end, audio - agi,
                       audio - detected - provider_seconds(playback))


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
        for number, (label, context, playback) in enumerate(FLOWS):
            conf = conf_text(emulators, data_dir=SHARED, extra=f"[general]\nplayback = {playback}\nmax_turns = 1\n")
            rig.write_voiceassist_conf(conf)
            if context.endswith("fastagi"):
                config_path = SHARED / "bench-fastagi.conf"
                config_path.write_text(conf)
                server = start_fastagi(config_path)
            log(f"{label}: {args.calls} calls")
            for call_number in range(args.calls):
                key = f"9{number}{call_number:02d}{int(time.time()) % 100:02d}"
                call = place_call(rig, key, [question], context=context, listen=8, grace=5)
                call.wait(timeout=120)
                try:
                    results.setdefault(label, []).append(measure(rig, key, playback))
                except LookupError as exc:  # e.g. the test caller left early: report it, keep going
                    skipped.append(f"{label} call {key}: {str(exc)[:300]}")
            if server is not None:
                server.terminate()
                server.wait(30)
                server = None
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
    for line in skipped:
        print(f"skipped (incomplete events): {line}")
    print(f"\nraw measurements: {raw}")
    return 0


def report(results: dict[str, list[Measurement]], calls: int) -> None:
    print(f"\nEnd of the caller's speech -> first answer audio on the channel (median of up to {calls} calls, ms)")
    print(f"emulated providers: STT {STT_S * 1000:.0f}, LLM first token {LLM_FIRST_S * 1000:.0f} + "
          f"{TOKENS_PER_S:.0f} tokens/s, TTS {TTS_S * 1000:.0f}; reply {len(words(REPLY))} words, "
          f"first sentence {len(words(FIRST_SENTENCE))}\n")
    header = f"{'flow':40} {'speech end->audio':>17} {'silence detect':>14} {'AGI->audio':>10} {'providers':>9} {'overhead':>8}"
    print(header)
    print("-" * len(header))
    baseline = None
    for label, playback in ((label, playback) for label, _, playback in FLOWS):
        rows = results.get(label, [])
        if not rows:
            continue
        median = {field: statistics.median(getattr(r, field) for r in rows) * 1000
                  for field in Measurement.__dataclass_fields__}
        baseline = baseline or median["speech_end_to_audio"]
        print(f"{label:40} {median['speech_end_to_audio']:17.0f} {median['silence_detection']:14.0f} "
              f"{median['agi_to_audio']:10.0f} {provider_seconds(playback) * 1000:9.0f} {median['overhead']:8.0f}"
              f"   ({median['speech_end_to_audio'] / baseline:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
