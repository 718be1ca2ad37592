"""Process AGI cold start and per-call memory: voiceassist's lazy imports against a script that
imports all three SDKs at the top (as the design card's single script does).

    .venv/bin/python -m benchmarks.cold_start [--runs N]

Each run starts a new Python, as Asterisk does for every question, and plays Asterisk's side of
one turn (the environment, one reply per command) against emulated providers that answer at once,
so the figures are the toolkit's own: interpreter start, imports, config, SDK clients, audio
conversion, the database. Measured per process: spawn → first AGI command, spawn → first answer
audio handed to Asterisk (STREAM FILE), spawn → exit (what Asterisk waits before the dialplan goes
on), and peak RSS (``wait4``'s ru_maxrss). The EAGI listener's start (spawn → exit on an audio pipe
that is already closed) is measured too: it runs while the beep plays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from harness.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
from harness.fake_asterisk import agi_env, run_process_agi, speech_wav
from harness.helpers import conf_text

EAGER = """import sys
import google.cloud.speech, google.genai, openai  # the design card's script: everything at the top
from voiceassist.cli import main
sys.exit(main())
"""


def one_run(argv: list[str], env: bytes, config: Path, audio_closed: bool = False) -> dict[str, float]:
    """Drive one AGI process; times in ms from spawn, peak RSS in MB."""
    read_end = None
    if audio_closed:
        read_end, write_end = os.pipe()
        os.close(write_end)
    try:
        run = run_process_agi(argv, env, audio_fd=read_end, environ=dict(os.environ, VOICEASSIST_CONFIG=str(config)))
    finally:
        if read_end is not None:
            os.close(read_end)
    if run.code != 0:
        raise RuntimeError(f"{argv} exited with status {run.code}: {run.stderr[-500:]}")
    audio = [t for t, command in zip(run.command_times, run.commands) if command.startswith("STREAM FILE")]
    return {"first_command": (run.command_times[0] if run.commands else run.exited) * 1000,
            "first_audio": audio[0] * 1000 if audio else float("nan"),
            "exit": run.exited * 1000, "rss_mb": run.peak_rss_mb}


def summary(rows: list[dict[str, float]], field: str) -> str:
    values = sorted(r[field] for r in rows)
    if any(v != v for v in values):  # NaN: no such event
        return "-"
    return f"{statistics.median(values):.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="processes per variant (default 10)")
    args = parser.parse_args(argv)
    emulators = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
                 "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    results: dict[str, list[dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            data = Path(scratch)
            config = data / "voiceassist.conf"
            config.write_text(conf_text(emulators, data_dir=data, extra="[logging]\nlevel = INFO\n"))
            eager = data / "eager_agi.py"
            eager.write_text(EAGER)
            question = speech_wav(data / "question.wav")
            variants = {
                "voiceassist agi (lazy imports)": [sys.executable, "-m", "voiceassist", "agi"],
                "all three SDKs imported at the top": [sys.executable, str(eager), "agi"],
            }
            for run in range(args.runs):
                # Alternate the variants so that both see the same machine state.
                for label, command in variants.items():
                    uniqueid = f"1700000{run:03d}.{len(label)}"
                    # Where the dialplan records it: the turn refuses a recording outside the call's directory.
                    recording = data / "spool/voiceassist" / uniqueid / "question-1.wav"
                    recording.parent.mkdir(parents=True, exist_ok=True)
                    os.link(question, recording)
                    env = agi_env(["turn", str(recording), "NOISE", "1", "", "8008", uniqueid], uniqueid=uniqueid)
                    results.setdefault(label, []).append(one_run(command, env, config))
                listen_env = agi_env(["listen", str(data / f"spool/voiceassist/1700000000.1/listen-{run}.wav")],
                                     enhanced=True)
                results.setdefault("EAGI listener (voiceassist agi listen)", []).append(
                    one_run([sys.executable, "-m", "voiceassist", "agi"], listen_env, config, audio_closed=True))
    finally:
        for emulator in emulators.values():
            emulator.close()
    print(f"\nProcess AGI cold start, {sys.version.split()[0]}, median of {args.runs} processes each "
          f"(providers emulated with no latency)\n")
    header = f"{'variant':40} {'first command':>13} {'first audio':>11} {'exit':>6} {'peak RSS':>9}"
    print(header)
    print("-" * len(header))
    base = None
    for label, rows in results.items():
        exit_ms = statistics.median(r["exit"] for r in rows)
        base = base or exit_ms
        print(f"{label:40} {summary(rows, 'first_command'):>10} ms {summary(rows, 'first_audio'):>8} ms "
              f"{exit_ms:>6.0f} {statistics.median(r['rss_mb'] for r in rows):>6.0f} MB   ({exit_ms / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
