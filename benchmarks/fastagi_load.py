"""FastAGI under load: N concurrent callers for several minutes against one `voiceassist serve`.

    .venv/bin/python -m benchmarks.fastagi_load [--callers 100] [--seconds 180]

A load driver speaks the FastAGI protocol as Asterisk does (environment block, one reply per
command, STREAM FILE answered after the sentence's playing time) for ``--callers`` simulated
callers at once. Each caller, in a loop: asks a question (one FastAGI turn), listens to the answer
and asks a second one a few seconds later (the time Asterisk spends playing and recording), then
hangs up (the ``hangup`` session the h extension runs). Questions are WAVs with a marker tone per
question, so the emulated STT knows which question it heard.

Providers are emulated at fixed latencies (STT 400 ms, LLM first token 300 ms + 40 tokens/s,
TTS 300 ms) in this process; the server is a separate process whose CPU time and RSS are sampled
from /proc. Reported: turns per minute, first answer audio after the turn started, and the
toolkit's overhead = that minus the providers' time on the path (p50/p99); the server's CPU
(cores) and peak RSS; then a check of every call in the database: each turn's transcript is the
question that caller asked, its reply answers it, its answer file sits in that call's directory,
and no turn is missing or extra.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
from harness.emulators.gemini import words
from harness.fake_asterisk import fastagi_env
from harness.helpers import conf_text

STT_S, LLM_FIRST_S, TOKENS_PER_S, TTS_S = 0.4, 0.3, 40.0, 0.3
QUESTIONS = {440.0 + 110 * i: f"Question number {i}: what are your opening hours on day {i}?" for i in range(12)}
REPLY_SUFFIX = " We are happy to help. Call again any time."


def question_wav(path: Path, marker_hz: float) -> Path:
    """A 300 ms marker tone then 1.2 s of speech-like noise, 8 kHz 16-bit."""
    rate = 8000
    t = np.arange(int(0.3 * rate)) / rate
    tone = np.sin(2 * np.pi * marker_hz * t) * 8000
    noise = np.random.default_rng(int(marker_hz)).normal(0, 3000, int(1.2 * rate))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.concatenate([tone, noise]).astype("<i2").tobytes())
    return path


def reply_for(question: str) -> str:
    return f"You asked: {question}{REPLY_SUFFIX}"


def provider_seconds(reply: str) -> float:
    first_sentence = reply.split(": ", 1)[0] + ": " + reply.split(": ", 1)[1].split("?")[0] + "?"
    return STT_S + LLM_FIRST_S + (len(words(first_sentence)) - 1) / TOKENS_PER_S + TTS_S


@dataclass
class Results:
    lock: threading.Lock = field(default_factory=threading.Lock)
    first_audio: list[float] = field(default_factory=list)
    overhead: list[float] = field(default_factory=list)
    asked: dict[str, list[str]] = field(default_factory=dict)  # uniqueid -> questions asked
    errors: Counter = field(default_factory=Counter)
    turns: int = 0


def session(port: int, env: bytes, timeout: float = 60) -> tuple[float | None, list[str]]:
    """One FastAGI session as Asterisk runs it; returns (seconds to the first STREAM FILE, commands)."""
    started = time.monotonic()
    first_audio = None
    commands = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(env)
        reader = sock.makefile("rb")
        for raw in reader:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            commands.append(line)
            if line.startswith("STREAM FILE"):
                first_audio = first_audio or time.monotonic() - started
                sound = line.split('"')[1] if '"' in line else line.split()[2]
                try:
                    seconds = Path(sound + ".ulaw").stat().st_size / 8000
                except OSError:
                    seconds = 0.0
                time.sleep(seconds)  # Asterisk answers STREAM FILE when the sound has been played
                sock.sendall(f"200 result=0 endpos={int(seconds * 8000)}\n".encode())
            else:
                sock.sendall(b"200 result=1\n")
    return first_audio, commands


def caller(number: int, port: int, stop_at: float, questions: dict[float, Path], results: Results) -> None:
    rng = random.Random(number)
    call_index = 0
    time.sleep(rng.uniform(0, 5))  # callers do not all start in the same second
    while time.monotonic() < stop_at:
        call_index += 1
        uniqueid = f"{1800000000 + number}.{call_index}"
        start = f"{time.time():.0f}"
        for turn in (1, 2):
            marker = rng.choice(list(questions))
            # Where the dialplan records it (the server refuses a recording outside the call's
            # directory): a hard link to the shared question, <answer_dir>/<uniqueid>/question-N.wav.
            recording = questions[marker].parent / "spool/voiceassist" / uniqueid / f"question-{turn}.wav"
            recording.parent.mkdir(parents=True, exist_ok=True)
            os.link(questions[marker], recording)
            args = ["turn", str(recording), "NOISE", str(turn), start, "8008", uniqueid,
                    f"{time.time():.3f}", "0"]
            try:
                first_audio, commands = session(port, fastagi_env(uniqueid=uniqueid, args=args))
            except OSError as exc:
                with results.lock:
                    results.errors[type(exc).__name__] += 1
                continue
            with results.lock:
                results.asked.setdefault(uniqueid, []).append(QUESTIONS[marker])
                results.turns += 1
                if first_audio is None:
                    results.errors["no answer audio"] += 1
                else:
                    results.first_audio.append(first_audio)
                    results.overhead.append(first_audio - provider_seconds(reply_for(QUESTIONS[marker])))
            time.sleep(rng.uniform(2.0, 4.0))  # "anything else?", the beep, the caller's next question
        try:
            session(port, fastagi_env(uniqueid=uniqueid, args=["hangup", "done", "", "2", "8008", uniqueid]))
        except OSError as exc:
            with results.lock:
                results.errors[f"hangup {type(exc).__name__}"] += 1


class ServerProbe(threading.Thread):
    """Samples the server's CPU time and RSS (its worker processes included) from /proc every second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss_mb = 0.0
        self.threads_peak = 0
        self.running = True
        self.cpu_start = self.cpu_seconds()
        self.wall_start = time.monotonic()

    def pids(self) -> list[int]:
        children = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout.split()
        return [self.pid, *(int(c) for c in children)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime + stime + the same for its children that ended (ffmpeg), in ticks of 1/100 s
            total += sum(int(value) for value in fields[11:15]) / 100
        return total

    def run(self) -> None:
        while self.running:
            rss = threads = 0
            for pid in self.pids():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    if line.startswith("Threads:"):
                        threads += int(line.split()[1])
            self.peak_rss_mb = max(self.peak_rss_mb, rss / 1024)
            self.threads_peak = max(self.threads_peak, threads)
            time.sleep(1)

    def cores(self) -> float:
        return (self.cpu_seconds() - self.cpu_start) / (time.monotonic() - self.wall_start)


def check_database(database: Path, asked: dict[str, list[str]]) -> list[str]:
    """Every turn in the right call, nothing lost or extra; returns the problems found."""
    problems = []
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT c.uniqueid, t.turn_number, t.status, t.transcript, t.reply, t.answer_path "
                          "FROM voiceassist_turns t JOIN voiceassist_calls c ON c.id = t.call_id").fetchall()
        ended = {u for (u,) in db.execute("SELECT uniqueid FROM voiceassist_calls WHERE ended_at IS NOT NULL")}
    stored: dict[str, list[tuple]] = {}
    for uniqueid, number, status, transcript, reply, answer_path in rows:
        stored.setdefault(uniqueid, []).append((number, status, transcript, reply, answer_path))
    for uniqueid, questions in asked.items():
        turns = sorted(stored.get(uniqueid, []))
        if [t[0] for t in turns] != list(range(1, len(questions) + 1)):
            problems.append(f"{uniqueid}: turns {[t[0] for t in turns]} stored for {len(questions)} asked")
            continue
        for (number, status, transcript, reply, answer_path), question in zip(turns, questions):
            if status != "ok" or transcript != question or reply != reply_for(question):
                problems.append(f"{uniqueid} turn {number}: {status} {transcript!r} -> {reply!r}, asked {question!r}")
            elif f"/{uniqueid}/" not in (answer_path or "") or not Path(answer_path).exists():
                problems.append(f"{uniqueid} turn {number}: answer file {answer_path!r}")
    extra = set(stored) - set(asked)
    if extra:
        problems.append(f"{len(extra)} calls in the database that no caller made")
    not_ended = [u for u in asked if u not in ended]
    if not_ended:
        problems.append(f"{len(not_ended)} calls without their end stored (e.g. {not_ended[:3]})")
    return problems


def stage_medians(database: Path) -> dict[str, float]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT stt_ms, llm_first_ms, first_audio_ms FROM voiceassist_turns "
                          "WHERE status = 'ok'").fetchall()
    if not rows:
        return {}
    columns = list(zip(*rows))
    return {name: sorted(v for v in column if v is not None)[len(column) // 2]
            for name, column in zip(("stt", "llm first words", "first audio"), columns)}


def cache_marker_detection() -> None:
    """The STT emulator finds the question by FFTs over the whole recording; the driver sends the
    same 12 recordings again and again, so remember the answers: otherwise the emulator's own
    CPU (one Python process for all emulators and the driver) becomes what is measured."""
    import harness.emulators.speech as speech_emulator

    measure, cache = speech_emulator.marker_strength, {}

    def cached(pcm: np.ndarray, rate: int, frequency: float) -> float:
        key = (hash(pcm.tobytes()), rate, frequency)
        if key not in cache:
            cache[key] = measure(pcm, rate, frequency)
        return cache[key]

    speech_emulator.marker_strength = cached


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(share * len(ordered) + 0.5)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--port", type=int, default=4590)
    parser.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    args = parser.parse_args(argv)
    cache_marker_detection()
    emulators = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
                 "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    emulators["speech"].latency = STT_S
    emulators["speech"].transcripts = dict(QUESTIONS)
    emulators["gemini"].latency = LLM_FIRST_S
    emulators["gemini"].tokens_per_second = TOKENS_PER_S
    emulators["gemini"].reply = lambda body: reply_for(body["contents"][-1]["parts"][0]["text"])
    emulators["tts"].latency = TTS_S
    emulators["tts"].seconds = 0.5
    results = Results()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch)
        questions = {hz: question_wav(data / f"q{int(hz)}.wav", hz) for hz in QUESTIONS}
        config = data / "voiceassist.conf"
        config.write_text(conf_text(emulators, data_dir=data, extra=(
            "[general]\nplayback = pipelined\nmax_turns = 3\n[logging]\nlevel = INFO\n"
            "[google_speech]\ntimeout = 10\n[gemini]\ntimeout = 10\n[openai_tts]\ntimeout = 10\n")))
        server = subprocess.Popen([sys.executable, "-m", "voiceassist", "--config", str(config), "serve",
                                   "--port", str(args.port), "--max-calls", str(args.callers + 20),
                                   "--workers", str(args.workers)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert server.stdout is not None
        for line in server.stdout:
            if "listening" in line:
                break
        threading.Thread(target=server.stdout.read, daemon=True).start()  # keep its pipe drained
        probe = ServerProbe(server.pid)
        probe.start()
        stop_at = time.monotonic() + args.seconds
        threads = [threading.Thread(target=caller, args=(n, args.port, stop_at, questions, results))
                   for n in range(args.callers)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        cores = probe.cores()
        probe.running = False
        server.terminate()
        server.wait(90)
        for emulator in emulators.values():
            emulator.close()
        problems = check_database(data / "voiceassist.db", results.asked)
        stages = stage_medians(data / "voiceassist.db")
        driver_cpu = time.process_time() / elapsed
        spooled = list((data / "db-spool").glob("*.json")) if (data / "db-spool").exists() else []

    print(f"\nFastAGI load: {args.callers} concurrent callers for {elapsed:.0f} s, {args.workers} server process(es) "
          f"(2-core machine; emulators and driver in another process)")
    print(f"turns answered          {results.turns} ({results.turns / elapsed * 60:.0f} per minute), "
          f"calls {len(results.asked)}")
    if results.first_audio:
        print(f"first answer audio      p50 {percentile(results.first_audio, .5) * 1000:.0f} ms, "
              f"p99 {percentile(results.first_audio, .99) * 1000:.0f} ms (from the turn's start)")
        print(f"toolkit overhead        p50 {percentile(results.overhead, .5) * 1000:.0f} ms, "
              f"p99 {percentile(results.overhead, .99) * 1000:.0f} ms, max {max(results.overhead) * 1000:.0f} ms "
              f"(first audio minus provider time {provider_seconds(reply_for(QUESTIONS[440.0])) * 1000:.0f} ms)")
    print(f"server                  {cores:.2f} cores busy on average, peak RSS {probe.peak_rss_mb:.0f} MB, "
          f"peak threads {probe.threads_peak}")
    print("stages (median ms)      " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items())
          + f" (providers: STT {STT_S * 1000:.0f}, LLM first {LLM_FIRST_S * 1000:.0f}, TTS {TTS_S * 1000:.0f})")
    print(f"driver + emulators      {driver_cpu:.2f} cores busy on average")
    print(f"driver errors           {dict(results.errors) or 'none'}")
    print(f"spooled (not in DB)     {len(spooled)}")
    print(f"database check          {'every turn in the right call, none lost' if not problems else ''}")
    for problem in problems[:20]:
        print(f"  PROBLEM {problem}")
    return 1 if problems or results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
