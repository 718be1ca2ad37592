"""Real-time calls under load: how many concurrent AudioSocket calls one `voiceassist serve` paces.

    .venv/bin/python -m benchmarks.live_load [--calls 10,25,50,75] [--seconds 45] [--workers 1]
                                             [--answer-seconds 3] [--thread-cpu] [--keep DIR]

No Asterisk: a load driver plays Asterisk's part for ``N`` callers at once, for each call count
in ``--calls`` in turn (give them in ascending order), against one `voiceassist serve` started
for the run and warmed up by two calls first (lazy imports, SDK clients, the database's tables).
Each simulated call is what the ``voiceassist-live`` FastAGI route and Asterisk's
``AudioSocket()`` application do:

* the control session: the FastAGI environment for ``voiceassist-live`` (``8008`` and a
  linkedid), an answer to each command (``GET VARIABLE`` ... a narrowband ``ulaw`` phone), and
  ``EXEC AudioSocket "<uuid>,127.0.0.1:<port>"``, answered when the media connection is over
  (``200 result=-1`` then ``HANGUP`` once the caller has hung up, as Asterisk does);
* the media connection: the UUID frame, then the caller's audio as 20 ms ``0x10`` frames in real
  time (silence between questions, as a phone sends). The caller waits for the greeting to end,
  asks a spoken question (espeak-ng, 300 ms marker tone first so the emulated recogniser knows
  which), waits for the answer to end, asks a second one, then hangs up (``0x00``) and calls
  again. Every frame received is timestamped on arrival (one receiver thread on epoll; one
  sender thread sends each call's frames, the calls spread over the 20 ms).

Providers are emulated at fixed latencies in a separate process: Google Speech's gRPC stream
(final words 150 ms after the speech), Gemini (first token 300 ms, then 40 tokens/s), OpenAI
speech (200 ms, then 24 kHz PCM in 100 ms chunks, ``--tts-chunk-delay`` apart) whose audio is a
pure tone of ``--answer-seconds`` (3 s), one sentence: the answer's frames are the tone frames
(told apart from prompts and silence after the run).

Callers start spread over ``--ramp`` seconds; the measured window (``--seconds``) begins 5 s
after the last one started and all callers hang up at its end. Only answers played wholly
inside the window count. Columns:

  calls        concurrent callers
  answers      whole answers heard inside the window
  late p50/p99/max
               frame lateness in ms as the caller receives the answer: arrival of the answer's
               k-th frame minus (arrival of its first frame + 20 ms * k), over all answer frames
  krn p99      the same p99, from the kernel's receive time of each frame's packet (SO_TIMESTAMPNS):
               what the driver's own scheduling added is the difference
  gaps>30      consecutive answer frames more than 30 ms apart (a frame > 10 ms late)
  under>40     ... more than 40 ms apart: an underrun inside the answer (one sentence)
  /min         underruns per minute of answer audio heard
  starved      silence frames the server sent inside an answer (its audio not ready in time)
  cores        server CPU (utime+stime of the process and its children, /proc) over the window
               divided by the window's length
  ms/call-s    server CPU milliseconds per second of connected call in the window
  RSS MB       server peak VmRSS (process and children) during the window
  MB/call      (that peak - the server's RSS at rest after the warm-up) / calls
  clock p99    the server's media clock: p99 of how late its 20 ms ticks came (ms), taken from
               the server process itself (a wrapper around `voiceassist serve` keeps each tick's
               lateness and writes it at exit); "-" when it could not be read. A tick more than
               100 ms late restarts the clock's schedule and is recorded by the clock as 0 ms:
               those are counted apart ("resets", below the table)
  send p99     p99 over the ticks of how long after the tick's time its last leg's frame had been
               handed to the socket (ms): the clock sends the legs one after the other
  drv cores    the driver's own CPU (all its threads); the emulators' is printed below the table

Then, per count: reply time (end of the question's speech to the answer's first frame,
p50/p99), fillers heard ("one moment"), the driver's sender lateness (p99: if it is high, the
driver, not the server, was short of CPU); the server's user/system CPU split; the silence frames
the conversation made up for caller audio it had not read in time (Asterisk sends a frame every
20 ms, so each one is the server's own lateness, put into what the recogniser hears); with
``--thread-cpu`` the server's CPU by thread kind; errors, the server log's warnings and errors,
and what the database holds for the count's calls (turns by status, transcripts that are no
question asked). ``--workers N`` runs `serve --workers N` (RSS then sums the processes).
The last line is JSON with the same figures. Ports: FastAGI 4690, AudioSocket 4691 (+ worker;
emulators on free ephemeral ports), everything on 127.0.0.1. The run stops by itself: each count
takes --ramp + 5 + --seconds + a few seconds (callers hang up at the window's end).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from harness.emulators.openai_api import ANSWER_TONES
from harness.fake_asterisk import asterisk_parse_args, fastagi_env
from harness.helpers import conf_text

REPO = Path(__file__).resolve().parents[1]
FASTAGI_PORT, MEDIA_PORT = 4690, 4691
STT_FINAL_S, LLM_FIRST_S, TOKENS_PER_S, TTS_S = 0.15, 0.3, 40.0, 0.2
QUESTIONS = [("What are your opening hours?", 2200.0), ("Are you open on Sunday?", 2500.0),
             ("I need a plumber for my kitchen sink", 2800.0), ("Do you deliver to my street?", 3100.0)]
FRAME_S = 0.02
FRAME_BYTES = 320                     # 20 ms of 8 kHz 16-bit mono
SAMPLES = FRAME_BYTES // 2
SILENCE = bytes(FRAME_BYTES)
KIND_HANGUP, KIND_UUID, KIND_AUDIO = 0x00, 0x01, 0x10
HANGUP_FRAME = bytes([KIND_HANGUP, 0, 0])
FRAME_WIRE = 3 + FRAME_BYTES
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # Linux: receive times of TCP data as ancillary data
ANCILLARY = socket.CMSG_SPACE(16)
SILENCE_FRAME = bytes([KIND_AUDIO, FRAME_BYTES >> 8, FRAME_BYTES & 0xFF]) + SILENCE
LATE_GAP_S, UNDERRUN_GAP_S = 0.030, 0.040
GREETING_END_FRAMES = 15              # 300 ms of silence after the greeting: the caller may talk
ANSWER_END_FRAMES = 15                # ... after the answer
ANSWER_GAP_FRAMES = 25                # after the run: non-tone frames allowed inside one answer
ANSWER_TIMEOUT_S = 20.0               # a question without an answer after this: the caller hangs up
GREETING_TIMEOUT_S = 10.0
TONE_SHARE = 0.8                      # a frame is answer audio when this share of it is one answer tone
SENDER_STEP_S = 0.005                 # the sender wakes 4 times per frame, a quarter of the calls each
SETTLE_S = 5.0                        # after the last caller started, before the window opens

_t = np.arange(SAMPLES) / 8000
COS = np.stack([np.cos(2 * np.pi * f * _t) for f in ANSWER_TONES], axis=1)
SIN = np.stack([np.sin(2 * np.pi * f * _t) for f in ANSWER_TONES], axis=1)

# `voiceassist serve` instrumented from outside (voiceassist itself unchanged), written at exit:
# * each media clock tick's lateness, with its time (from the AudioSocket pump's own figures);
# * when the clock restarted its schedule (a tick more than 100 ms late: the clock records it as 0);
# * per tick, how long after the tick's time the last leg's frame was handed to its socket (the
#   clock sends the legs one after the other, and each send lets other threads take the GIL);
# * the silence frames the conversation made up for caller frames it thought missing (over
#   AudioSocket, Asterisk sends every 20 ms: each one is the server's own lateness);
# * with LIVE_LOAD_THREAD_CPU=1, every second, the CPU time of the server's threads by kind.
# One file per server process (`serve --workers N`: each worker has its own media server and clock).
SERVER_WRAPPER = r"""
import atexit, json, os, re, sys, threading, time
from voiceassist.asterisk import audiosocket
from voiceassist.call import realtime

servers, ticks, reset_times, spread, thread_samples, filled = [], [], [], [], [], []
collections, collection_started = [], {}

def time_collection(phase, info):  # the garbage collector's pauses (it holds the interpreter lock)
    if phase == "start":
        collection_started["at"] = time.monotonic()
    elif "at" in collection_started:
        collections.append((collection_started.pop("at"), time.monotonic(), info["generation"]))

import gc
gc.callbacks.append(time_collection)
polled = {}
poll_lock = threading.Lock()

# The media clock runs in the AudioSocket pump, a process of the server's own: its ticks are
# fetched from it every few seconds (it keeps five minutes) and once more before it stops.
def poll(server):
    with poll_lock:
        got = server.pump.stats(polled.get(id(server), 0.0))
        for due, late, sent in got.get("ticks", []):
            ticks.append((due, late))
            spread.append((due, sent))
            if late > 0.1:  # MediaClock restarts its schedule past MAX_CATCH_UP ticks late
                reset_times.append(due)
            polled[id(server)] = due

def poll_forever(server):
    while True:
        time.sleep(5)
        poll(server)

original_start = audiosocket.AudioSocketServer.start
original_shutdown = audiosocket.AudioSocketServer.shutdown

def start(self):
    original_start(self)
    if not servers and os.environ.get("LIVE_LOAD_THREAD_CPU") == "1":  # in each worker process
        threading.Thread(target=sample_threads, daemon=True, name="live-load-sampler").start()
    servers.append(self)
    threading.Thread(target=poll_forever, args=(self,), daemon=True, name="live-load-poller").start()

def shutdown(self):
    poll(self)
    original_shutdown(self)

audiosocket.AudioSocketServer.start = start
audiosocket.AudioSocketServer.shutdown = shutdown
original_wait = audiosocket.AudioSocketLeg.wait_closed

def wait_closed(self):  # the thread that holds a connection, named for --thread-cpu
    threading.current_thread().name = "audiosocket-connection"
    return original_wait(self)

audiosocket.AudioSocketLeg.wait_closed = wait_closed
original_fill = realtime.LiveConversation._fill_silence

def fill_silence(self, now, arriving):
    missing = now - self._last_frame_at
    if missing >= realtime.NO_FRAMES_GAP_SECONDS and (arriving or not self.leg.audio_waiting()):
        frames = int(missing / realtime.FRAME_SECONDS) - (1 if arriving else 0)
        if frames > 0:
            filled.append((now, frames))
    return original_fill(self, now, arriving)

realtime.LiveConversation._fill_silence = fill_silence

def label(thread):
    target = getattr(thread, "_target", None)
    if thread.name.startswith("Thread-") and target is not None and not thread.name.endswith("(process_request_thread)"):
        return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
    return thread.name

def sample_threads():
    ticks, last, totals = os.sysconf("SC_CLK_TCK"), {}, {}
    while True:
        names = {t.native_id: label(t) for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            kind = re.sub(r"[-_]?[0-9][0-9.a-f]*", "", names.get(int(tid), "(not a Python thread)"))
            totals[kind] = totals.get(kind, 0.0) + cpu - last.get(tid, 0.0)
            last[tid] = cpu
        for server in servers:  # the pump process, as one more kind
            try:
                with open(f"/proc/{server.pump.pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, TypeError):
                continue
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            key = f"pump{server.pump.pid}"
            totals["(AudioSocket pump process)"] = totals.get("(AudioSocket pump process)", 0.0) + cpu - last.get(key, 0.0)
            last[key] = cpu
        thread_samples.append((time.monotonic(), dict(totals)))
        time.sleep(1)

def dump():
    if not servers:
        return  # the supervisor of `serve --workers N`: its workers write their own
    with open(f"{os.environ['LIVE_LOAD_CLOCK_FILE']}.{os.getpid()}", "w") as out:
        json.dump({"ticks": ticks, "resets": reset_times, "spread": sorted(spread), "threads": thread_samples,
                   "filled": filled,
                   "collections": [(at, end - at, generation) for at, end, generation in collections]}, out)

atexit.register(dump)
from voiceassist.cli import main
sys.exit(main())
"""


# -- audio -------------------------------------------------------------------------------------------
def tone_shares(frames: np.ndarray) -> np.ndarray:
    """For each row (one 20 ms frame of samples), the largest share of its energy at one answer tone."""
    energy = np.einsum("ij,ij->i", frames, frames)
    power = ((frames @ COS) ** 2 + (frames @ SIN) ** 2).max(axis=1) * 2 / SAMPLES
    return np.where(energy > 0, power / np.maximum(energy, 1e-9), 0.0)


def is_tone(payload: bytes) -> bool:
    samples = np.frombuffer(payload, dtype="<i2").astype(np.float64)
    return bool(tone_shares(samples[None, :])[0] > TONE_SHARE)


@dataclass
class Question:
    text: str
    frames: list[bytes]               # whole 0x10 frames, ready to send
    trailing_s: float                 # quiet audio at its end (the speech ended that much earlier)


def make_questions(directory: Path) -> list[Question]:
    """Each question spoken by espeak-ng at 8 kHz after a 300 ms marker tone (as harness/rig/calls.py)."""
    questions = []
    for number, (text, marker_hz) in enumerate(QUESTIONS):
        raw, marker, speech, target = (directory / f"q{number}.{part}.wav" for part in ("raw", "marker", "8k", "all"))
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(marker),
                        "synth", "0.3", "sine", str(marker_hz), "vol", "0.4"], check=True)
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(speech)], check=True)
        subprocess.run(["sox", str(marker), str(speech), str(target)], check=True)
        with wave.open(str(target), "rb") as wav:
            pcm = wav.readframes(wav.getnframes())
        pcm += bytes(-len(pcm) % FRAME_BYTES)
        chunks = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        quiet = 0
        for chunk in reversed(chunks):
            if np.abs(np.frombuffer(chunk, dtype="<i2").astype(np.int32)).mean() > 256:
                break
            quiet += 1
        header = bytes([KIND_AUDIO, FRAME_BYTES >> 8, FRAME_BYTES & 0xFF])
        questions.append(Question(text, [header + chunk for chunk in chunks], quiet * FRAME_S))
    return questions


# -- the emulators' process ----------------------------------------------------------------------------
def serve_emulators(answer_seconds: float, grpc_workers: int, chunk_delay: float) -> None:
    """Run in a child process: start the emulators, print their addresses as one JSON line, keep
    serving until stdin closes (their request records are dropped every few seconds)."""
    import concurrent.futures
    import types

    from harness.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
    from harness.emulators import speech_grpc

    # The emulator's gRPC server has 16 threads, one per open stream: not enough for 50 callers.
    pool = concurrent.futures.ThreadPoolExecutor
    speech_grpc.futures = types.SimpleNamespace(  # type: ignore[assignment,attr-defined]
        ThreadPoolExecutor=lambda max_workers: pool(max_workers=max(max_workers, grpc_workers)))
    emulators: dict[str, Any] = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
                                 "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    stream = speech_grpc.SpeechGrpcEmulator()
    stream.transcripts = {hz: text for text, hz in QUESTIONS}
    stream.final_delay = STT_FINAL_S
    emulators["gemini"].latency = LLM_FIRST_S
    emulators["gemini"].tokens_per_second = TOKENS_PER_S
    emulators["tts"].latency = TTS_S
    emulators["tts"].seconds = answer_seconds
    emulators["tts"].speech_chunk_delay = chunk_delay
    addresses = {name: emulator.base_url for name, emulator in emulators.items()}
    addresses["speech_grpc"] = stream.endpoint
    print(json.dumps(addresses), flush=True)
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(5):
            stream.streams.clear()
            for emulator in emulators.values():
                if isinstance(getattr(emulator, "requests", None), list):
                    with emulator._lock:
                        emulator.requests.clear()

    threading.Thread(target=trim, daemon=True).start()
    sys.stdin.read()
    stop.set()
    stream.close()
    for emulator in emulators.values():
        emulator.close()


class Emulators:
    """The emulators' child process and their addresses (objects with ``base_url`` for conf_text)."""

    def __init__(self, answer_seconds: float, grpc_workers: int, chunk_delay: float, log: IO[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.live_load", "--serve-emulators", str(answer_seconds),
             "--grpc-workers", str(grpc_workers), "--tts-chunk-delay", str(chunk_delay)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the emulators did not start")
        self.addresses: dict[str, str] = json.loads(line)

    def for_conf(self) -> dict[str, Any]:
        return {name: type("Address", (), {"base_url": url})() for name, url in self.addresses.items()}

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- /proc -----------------------------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        try:
            tasks = os.listdir(f"/proc/{pids[index]}/task")
        except OSError:
            tasks = []
        for task in tasks:
            try:
                pids += [int(c) for c in Path(f"/proc/{pids[index]}/task/{task}/children").read_text().split()]
            except OSError:
                pass
        index += 1
    return pids


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) seconds of ``pid`` and its descendants, with those of their children already
    waited for (utime + cutime, stime + cstime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += (int(fields[11]) + int(fields[13])) / ticks
        system += (int(fields[12]) + int(fields[14])) / ticks
    return user, system


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def machine_times() -> list[int]:
    """/proc/stat's cpu line: user nice system idle iowait irq softirq steal (ticks, all cores)."""
    return [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def rss_mb(pid: int) -> float:
    total = 0
    for each in process_tree(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class RSSProbe(threading.Thread):
    """The server's peak RSS while ``measuring`` (sampled every 0.5 s)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.measuring = False
        self.running = True

    def run(self) -> None:
        while self.running:
            if self.measuring:
                self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.5)


# -- the driver: media ------------------------------------------------------------------------------------
@dataclass(eq=False)
class Leg:
    """One call's AudioSocket connection, as Asterisk's side of it."""

    sock: socket.socket
    phase: int
    questions: list[Question]
    per_call: int
    rng: random.Random
    connected_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    times: list[float] = field(default_factory=list)       # arrival of every audio frame received (driver)
    kernel_times: list[float] = field(default_factory=list)  # ... its packet's arrival in the kernel
    flags: bytearray = field(default_factory=bytearray)    # 1: not silence
    payloads: list[bytes] = field(default_factory=list)    # the frames that are not silence
    buffer: bytearray = field(default_factory=bytearray)
    state: str = "greeting"          # greeting, asking, listening, pausing, done
    seen_greeting: bool = False
    silent_run: int = 0
    in_answer: bool = False
    ask_at: float | None = None
    hangup_at: float | None = None
    sending: list[bytes] | None = None
    position: int = 0
    asked: list[tuple[float, float]] = field(default_factory=list)  # (question sent, its speech ended)
    answers_seen: int = 0
    hung_up_by_us: bool = False
    server_hung_up: bool = False
    no_answer: bool = False
    send_blocked: int = 0
    sent_at: list[float] = field(default_factory=list)  # each tick of the sender (a frame sent)

    # the receiver's side
    def received(self, data: bytes, now: float, kernel: float) -> None:
        buf = self.buffer
        buf += data
        pos, size = 0, len(buf)
        while size - pos >= 3:
            length = (buf[pos + 1] << 8) | buf[pos + 2]
            if size - pos - 3 < length:
                break
            kind = buf[pos]
            if kind == KIND_AUDIO:
                self.kernel_times.append(kernel)
                self.frame(bytes(buf[pos + 3:pos + 3 + length]), now)
            elif kind == KIND_HANGUP:
                self.server_hung_up = True
            pos += 3 + length
        del buf[:pos]

    def frame(self, payload: bytes, now: float) -> None:
        self.times.append(now)
        silent = payload == SILENCE
        if silent:
            self.flags.append(0)
            self.silent_run += 1
        else:
            self.flags.append(1)
            self.payloads.append(payload)
            self.silent_run = 0
        with self.lock:
            if self.state == "greeting":
                if not silent:
                    self.seen_greeting = True
                elif self.seen_greeting and self.silent_run == GREETING_END_FRAMES and self.ask_at is None:
                    self.ask_at = now + self.rng.uniform(0.1, 0.4)
            elif self.state == "listening":
                if not self.in_answer:
                    if not silent and is_tone(payload):
                        self.in_answer = True
                elif self.silent_run == ANSWER_END_FRAMES:
                    self.in_answer = False
                    self.answers_seen += 1
                    self.state = "pausing"
                    if len(self.asked) < self.per_call:
                        self.ask_at = now + self.rng.uniform(0.3, 0.8)
                    else:
                        self.hangup_at = now + self.rng.uniform(0.3, 0.8)

    # the sender's side (every 20 ms)
    def step(self, now: float, stopping: bool) -> None:
        with self.lock:
            if self.state == "done":
                return
            self.sent_at.append(now)
            if stopping or (self.hangup_at is not None and now >= self.hangup_at):
                self.state = "done"
                self.hung_up_by_us = True
                self._send(HANGUP_FRAME)
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)  # the receiver sees the end and closes it
                except OSError:
                    pass
                return
            if self.state == "greeting" and self.ask_at is None and now - self.connected_at > GREETING_TIMEOUT_S:
                self.ask_at = now
            if self.state == "listening" and now - self.asked[-1][0] > ANSWER_TIMEOUT_S:
                self.no_answer = True
                self.hangup_at = now
            if self.state in ("greeting", "pausing") and self.ask_at is not None and now >= self.ask_at:
                question = self.questions[len(self.asked) % len(self.questions)]
                self.sending, self.position, self.ask_at = question.frames, 0, None
                self.state = "asking"
            if self.state == "asking":
                assert self.sending is not None
                self._send(self.sending[self.position])
                self.position += 1
                if self.position == len(self.sending):
                    question = self.questions[len(self.asked) % len(self.questions)]
                    self.asked.append((now, now + FRAME_S - question.trailing_s))
                    self.state, self.sending, self.in_answer = "listening", None, False
                return
        self._send(SILENCE_FRAME)

    def _send(self, data: bytes) -> None:
        try:
            if self.sock.send(data, socket.MSG_DONTWAIT) < len(data):
                self.send_blocked += 1
        except BlockingIOError:
            self.send_blocked += 1
        except OSError:
            pass


class Media:
    """All the calls' media connections: one receiver thread (epoll), one sender thread."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.pending: list[Leg] = []
        self.legs: list[Leg] = []
        self.all_legs: list[Leg] = []
        self.lock = threading.Lock()
        self.running = True
        self.stopping = False
        self.sender_lateness: list[tuple[float, float]] = []
        self._threads = [threading.Thread(target=self._receive, daemon=True, name="live-load-receiver"),
                         threading.Thread(target=self._send, daemon=True, name="live-load-sender")]
        self._phase = 0
        self.realtime_offset = time.time() - time.monotonic()  # CLOCK_REALTIME (kernel stamps) - monotonic

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def open(self, host: str, port: int, call_uuid: bytes, questions: list[Question], per_call: int,
             rng: random.Random) -> Leg:
        sock = socket.create_connection((host, port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.sendall(bytes([KIND_UUID, 0, 16]) + call_uuid)
        sock.setblocking(False)
        with self.lock:
            leg = Leg(sock, self._phase % 4, questions, per_call, rng)
            self._phase += 1
            self.pending.append(leg)
            self.all_legs.append(leg)
        self.wake_w.send(b"x")
        return leg

    def _receive(self) -> None:
        while self.running:
            events = self.selector.select(0.2)
            for key, _ in events:
                leg = key.data
                if leg is None:
                    try:
                        self.wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    with self.lock:
                        new, self.pending = self.pending, []
                        self.legs += new
                    for each in new:
                        self.selector.register(each.sock, selectors.EVENT_READ, each)
                    continue
                # One frame per read (each with the kernel's arrival time of its packet), until none is left.
                for _ in range(64):
                    try:
                        data, ancillary, _flags, _address = leg.sock.recvmsg(FRAME_WIRE, ANCILLARY)
                    except BlockingIOError:
                        break
                    except OSError:
                        data, ancillary = b"", []
                    now = time.monotonic()
                    if not data:
                        self._close(leg, now)
                        break
                    kernel = now
                    for cmsg_level, cmsg_type, payload in ancillary:
                        if cmsg_level == socket.SOL_SOCKET and cmsg_type == SO_TIMESTAMPNS and len(payload) >= 16:
                            seconds, nanoseconds = struct.unpack("qq", payload[:16])
                            kernel = seconds + nanoseconds / 1e9 - self.realtime_offset
                    leg.received(data, now, kernel)
                    if leg.server_hung_up:
                        self._close(leg, now)
                        break
                    if len(data) < FRAME_WIRE:
                        break

    def _close(self, leg: Leg, now: float) -> None:
        self.selector.unregister(leg.sock)
        leg.sock.close()
        with leg.lock:
            leg.state = "done"
        leg.ended_at = now
        with self.lock:
            self.legs.remove(leg)
        leg.ended.set()

    def _send(self) -> None:
        start, tick = time.monotonic(), 0
        while self.running:
            due = start + tick * SENDER_STEP_S
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
                now = time.monotonic()
            elif now - due > 0.1:
                start, tick, due = now, 0, now  # far behind: start the schedule again
            self.sender_lateness.append((now, now - due))
            phase = tick % 4
            with self.lock:
                legs = [leg for leg in self.legs if leg.phase == phase]
            for leg in legs:
                leg.step(now, self.stopping)
            tick += 1

    def stop(self) -> None:
        self.running = False
        for thread in self._threads:
            thread.join(2)
        for leg in list(self.legs) + self.pending:
            try:
                leg.sock.close()
            except OSError:
                pass
            leg.ended.set()


# -- the driver: control sessions ------------------------------------------------------------------------------
@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ends: Counter[str] = field(default_factory=Counter)     # VA_LIVE_END the route set (when the server ended)


def one_call(uniqueid: str, media: Media, questions: list[Question], per_call: int, rng: random.Random,
             tally: Tally) -> None:
    """One call's FastAGI session, with its media connection opened on the route's EXEC."""
    variables = {"CHANNEL(audionativeformat)": "(ulaw)"}
    dead = False
    leg: Leg | None = None
    with socket.create_connection(("127.0.0.1", FASTAGI_PORT), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(fastagi_env(script="voiceassist-live", uniqueid=uniqueid, args=["8008", uniqueid],
                                 port=FASTAGI_PORT))
        reader = sock.makefile("rb")
        for raw in reader:
            words = asterisk_parse_args(raw.decode("utf-8", "replace").rstrip("\n"))
            command = " ".join(words[:2]).upper()
            if command == "EXEC AUDIOSOCKET" and len(words) > 2 and leg is None:
                call_id, address = words[2].split(",", 1)
                host, port = address.rsplit(":", 1)
                try:
                    leg = media.open(host, int(port), bytes.fromhex(call_id.replace("-", "")), questions, per_call, rng)
                except OSError as exc:
                    with tally.lock:
                        tally.errors[f"media connect: {type(exc).__name__}"] += 1
                    sock.sendall(b"200 result=-1\nHANGUP\n")
                    dead = True
                    continue
                leg.ended.wait(900)
                if leg.hung_up_by_us:
                    sock.sendall(b"200 result=-1\nHANGUP\n")  # the caller hung up: the application's -1, then HANGUP
                    dead = True
                else:
                    sock.sendall(b"200 result=0\n")          # the media connection ended from the server's side
            elif command == "GET VARIABLE":
                value = variables.get(words[2]) if len(words) > 2 else None
                sock.sendall(f"200 result=1 ({value})\n".encode() if value is not None else b"200 result=0\n")
            elif command == "CHANNEL STATUS":
                sock.sendall(b"511 Command Not Permitted on a dead channel or intercept routine\n" if dead
                             else b"200 result=6\n")
            else:
                if command == "SET VARIABLE" and len(words) > 3 and words[2] == "VA_LIVE_END":
                    with tally.lock:
                        tally.ends[words[3]] += 1
                sock.sendall(b"200 result=1\n")
    with tally.lock:
        tally.calls += 1
        if leg is None:
            tally.errors["no media connection asked for"] += 1
        elif leg.no_answer:
            tally.errors["a question got no answer"] += 1
        elif leg.server_hung_up and not leg.hung_up_by_us:
            tally.errors["the server ended the call"] += 1


def caller(number: int, level: int, ramp: float, stop_at: float, media: Media, questions: list[Question],
           per_call: int, tally: Tally) -> None:
    rng = random.Random(level * 1000 + number)
    time.sleep(rng.uniform(0, ramp))
    index = 0
    while time.monotonic() < stop_at and not media.stopping:
        index += 1
        uniqueid = f"{caller_range(level)[0] + number}.{index}"
        mine = [questions[(number + i) % len(questions)] for i in range(len(questions))]
        try:
            one_call(uniqueid, media, mine, per_call, rng, tally)
        except OSError as exc:
            with tally.lock:
                tally.errors[f"control: {type(exc).__name__}"] += 1
            time.sleep(1)
        time.sleep(rng.uniform(0.2, 1.0))


# -- one call count ----------------------------------------------------------------------------------------
@dataclass
class Level:
    calls: int
    window_s: float
    answers: int = 0
    lateness_ms: list[float] = field(default_factory=list)
    kernel_lateness_ms: list[float] = field(default_factory=list)
    kernel_underruns: int = 0
    late_gaps: int = 0
    underruns: int = 0
    starved: int = 0
    answer_minutes: float = 0.0
    reply_ms: list[float] = field(default_factory=list)
    fillers: int = 0
    cores: float = 0.0
    cpu_ms_per_call_s: float = 0.0
    rss_peak_mb: float = 0.0
    rss_idle_mb: float = 0.0
    clock_ms: list[float] = field(default_factory=list)
    clock_resets: int | None = None
    driver_cores: float = 0.0
    emulator_cores: float = 0.0
    sender_late_ms: list[float] = field(default_factory=list)
    calls_made: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)
    log_counts: dict[str, int] = field(default_factory=dict)
    log_samples: list[str] = field(default_factory=list)
    send_blocked: int = 0
    stored: dict[str, Any] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)
    send_ms: list[float] = field(default_factory=list)
    thread_cores: dict[str, float] = field(default_factory=dict)
    user_cores: float = 0.0
    made_up_frames: int = 0          # silence frames the server made up for caller audio it had not read yet
    made_up_runs: int = 0
    caller_frames: int = 0           # caller audio frames sent in the window
    machine_idle: float = float("nan")   # share of all cores' time idle in the window (/proc/stat)
    machine_steal: float = float("nan")  # ... taken by the hypervisor


def analyse_leg(leg: Leg, level: Level, start: float, end: float, answer_frames: int) -> None:
    """The whole answers in [start, end] of one media connection, added to ``level``."""
    if not leg.times:
        return
    times = np.asarray(leg.times)
    flags = np.frombuffer(bytes(leg.flags), dtype=np.uint8).astype(bool)
    tone = np.zeros(len(times), dtype=bool)
    if leg.payloads:
        frames = np.frombuffer(b"".join(leg.payloads), dtype="<i2").astype(np.float64).reshape(-1, SAMPLES)
        tone[flags] = tone_shares(frames) > TONE_SHARE
    indices = np.flatnonzero(tone)
    if not len(indices):
        return
    for group in np.split(indices, np.flatnonzero(np.diff(indices) > ANSWER_GAP_FRAMES) + 1):
        first, last = int(group[0]), int(group[-1])
        if len(group) < answer_frames - 3 or times[first] < start or times[last] > end:
            continue  # cut by the hang-up at the window's end, or outside the window
        arrivals = times[first:last + 1]
        level.answers += 1
        level.answer_minutes += len(arrivals) * FRAME_S / 60
        schedule = arrivals[0] + FRAME_S * np.arange(len(arrivals))
        level.lateness_ms += ((arrivals - schedule) * 1000).tolist()
        gaps = np.diff(arrivals)
        kernel = np.asarray(leg.kernel_times[first:last + 1])
        level.kernel_lateness_ms += ((kernel - kernel[0] - FRAME_S * np.arange(len(kernel))) * 1000).tolist()
        level.kernel_underruns += int((np.diff(kernel) > UNDERRUN_GAP_S).sum())
        level.late_gaps += int((gaps > LATE_GAP_S).sum())
        level.underruns += int((gaps > UNDERRUN_GAP_S).sum())
        inside = ~tone[first:last + 1]
        level.starved += int((inside[1:] & ~inside[:-1]).sum())  # runs of non-answer frames inside
        before = [a for a in leg.asked if a[0] < times[first]]
        if before:
            asked_at, speech_end = before[-1]
            level.reply_ms.append((times[first] - speech_end) * 1000)
            # a prompt (not silence, not the answer) between the question and the answer: "one moment"
            between = (times > asked_at) & (times < times[first]) & flags & ~tone
            level.fillers += int(between.any())


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), share * 100))


def write_config(data: Path, emulators: Emulators, calls: int, log_level: str) -> Path:
    """The server's config for up to ``calls`` real-time calls at once."""
    config = data / "voiceassist.conf"
    config.write_text(conf_text(emulators.for_conf(), data_dir=data, extra=f"""
[stt]
provider = google_speech
[llm]
provider = gemini
[tts]
provider = openai_tts
[google_speech]
endpoint = {emulators.addresses["speech_grpc"]}
timeout = 10
[gemini]
timeout = 10
[openai_tts]
timeout = 10
[fastagi]
max_calls = {calls + 20}
[live]
transport = audiosocket
host = 127.0.0.1
audiosocket_port = {MEDIA_PORT}
max_calls = {calls + 20}
still_there_after = 60
goodbye_after = 60
[logging]
level = {log_level}
"""))
    return config


def start_server(config: Path, calls: int, clock_file: Path, thread_cpu: bool, workers: int) -> subprocess.Popen[str]:
    server = subprocess.Popen([sys.executable, "-c", SERVER_WRAPPER, "--config", str(config), "serve",
                               "--port", str(FASTAGI_PORT), "--max-calls", str((calls + 20) * workers),
                               "--workers", str(workers)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                              env={**os.environ, "LIVE_LOAD_CLOCK_FILE": str(clock_file),
                                   "LIVE_LOAD_THREAD_CPU": "1" if thread_cpu else "0"})
    assert server.stdout is not None
    output = []
    deadline = time.monotonic() + 60
    for line in server.stdout:
        output.append(line)
        if "FastAGI listening" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        raise RuntimeError("the server did not start:\n" + "".join(output))
    if workers == 1 and not any("real-time media" in line for line in output):
        server.kill()
        raise RuntimeError("the server has no real-time media server:\n" + "".join(output))
    threading.Thread(target=server.stdout.read, daemon=True).start()  # keep its pipe drained
    return server


def stop_server(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def scan_log(path: Path, since: int, until: int, level: Level) -> None:
    """The server log's warnings and errors between two offsets (this count's share of it)."""
    counts: Counter[str] = Counter()
    try:
        with path.open("rb") as log:
            log.seek(since)
            text = log.read(max(0, until - since)).decode("utf-8", "replace")
    except OSError:
        return
    warning = ""
    for line in text.splitlines():
        for word in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback"):
            if word in line:
                counts[word.strip()] += 1
                if word == " WARNING ":
                    warning = warning or line.strip()[:240]
                elif len(level.log_samples) < 6:
                    level.log_samples.append(line.strip()[:240])
    if warning:
        level.log_samples.append(warning)
    level.log_counts = dict(counts)


def caller_range(calls: int) -> tuple[int, int]:
    """The uniqueid seconds part of this count's callers (1800000000 + calls * 1000 + caller)."""
    return 1800000000 + calls * 1000, 1800000000 + calls * 1000 + 999


def check_database(database: Path, level: Level) -> None:
    """What the server stored for this count's calls: calls by end state, turns by status,
    transcripts that are no question asked."""
    low, high = caller_range(level.calls)

    def mine(uniqueid: str) -> bool:
        return low <= int(uniqueid.split(".")[0]) <= high

    try:
        with sqlite3.connect(database) as db:
            calls = [(u, e) for u, e in db.execute("SELECT uniqueid, end_state FROM voiceassist_calls") if mine(u)]
            turns = [row[1:] for row in db.execute(
                "SELECT c.uniqueid, t.status, t.interrupted, t.transcript FROM voiceassist_turns t "
                "JOIN voiceassist_calls c ON c.id = t.call_id") if mine(row[0])]
    except sqlite3.Error as exc:
        level.stored = {"error": str(exc)}
        return
    asked = {text for text, _ in QUESTIONS}
    level.stored = {"calls": dict(Counter(str(e) for _, e in calls)),
                    "turns": dict(Counter(f"{s}{' interrupted' if i else ''}" for s, i, _ in turns)),
                    "wrong transcripts": sum(1 for s, _, t in turns if s == "ok" and t not in asked)}


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def warm_up(media: Media, questions: list[Question], tally: Tally) -> None:
    """Two calls of one question each before anything is measured: the server's first calls
    import and set up what it uses lazily (SDK clients, the database's tables)."""
    threads = [threading.Thread(target=one_call, args=(f"{1799999990 + n}.1", media, questions[n:] + questions[:n], 1,
                                                       random.Random(n), tally), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def run_level(calls: int, args: argparse.Namespace, server: subprocess.Popen[str], emulators: Emulators,
              questions: list[Question], log: Path) -> Level:
    level = Level(calls, args.seconds)
    media = Media()
    tally = Tally()
    log_from = log_size(log)
    probe = RSSProbe(server.pid)
    probe.start()
    media.start()
    begin = time.monotonic()
    window_start = begin + args.ramp + SETTLE_S
    window_end = window_start + args.seconds
    threads = [threading.Thread(target=caller, args=(n, calls, args.ramp, window_end, media, questions,
                                                     args.questions, tally), daemon=True)
               for n in range(calls)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, window_start - time.monotonic()))
        probe.measuring = True
        (user0, system0), driver0 = cpu_times(server.pid), time.process_time()
        emulators0, machine0 = cpu_seconds(emulators.process.pid), machine_times()
        started = time.monotonic()
        time.sleep(max(0.0, window_end - time.monotonic()))
        (user1, system1), driver1 = cpu_times(server.pid), time.process_time()
        emulators1, machine1 = cpu_seconds(emulators.process.pid), machine_times()
        elapsed = time.monotonic() - started
    finally:
        probe.measuring = False
        probe.running = False
        media.stopping = True  # every caller hangs up now
        for thread in threads:
            thread.join(max(0.1, window_end + 40 - time.monotonic()))
        media.stop()
    cpu = (user1 + system1) - (user0 + system0)
    level.cores = cpu / elapsed
    level.user_cores = (user1 - user0) / elapsed
    spent = [b - a for a, b in zip(machine0, machine1)]
    level.machine_idle = (spent[3] + spent[4]) / max(1, sum(spent))
    level.machine_steal = spent[7] / max(1, sum(spent))
    level.driver_cores = (driver1 - driver0) / elapsed
    level.emulator_cores = (emulators1 - emulators0) / elapsed
    level.rss_peak_mb = probe.peak
    level.window = (window_start, window_end)
    call_seconds = sum(max(0.0, min(leg.ended_at or window_end, window_end) - max(leg.connected_at, window_start))
                       for leg in media.all_legs)
    level.cpu_ms_per_call_s = cpu * 1000 / call_seconds if call_seconds else float("nan")
    if any(thread.is_alive() for thread in threads):
        tally.errors["callers still in a call 40 s after the end"] += sum(t.is_alive() for t in threads)
    answer_frames = int(round(args.answer_seconds / FRAME_S))
    for leg in media.all_legs:
        analyse_leg(leg, level, window_start, window_end, answer_frames)
        level.send_blocked += leg.send_blocked
        level.caller_frames += sum(1 for at in leg.sent_at if window_start <= at <= window_end)
    level.sender_late_ms = [late * 1000 for at, late in media.sender_lateness if window_start <= at <= window_end]
    level.calls_made = tally.calls
    level.errors = dict(tally.errors)
    level.ends = dict(tally.ends)
    time.sleep(2)  # the last calls' ends stored, their log lines written
    scan_log(log, log_from, log_size(log), level)
    return level


# -- the report ----------------------------------------------------------------------------------------------
def summary(level: Level) -> dict[str, Any]:
    def rounded(value: float, digits: int = 1) -> float | None:
        return None if value != value else round(value, digits)  # NaN -> null

    return {
        "calls": level.calls, "answers": level.answers,
        "late_p50_ms": rounded(percentile(level.lateness_ms, .5)),
        "late_p99_ms": rounded(percentile(level.lateness_ms, .99)),
        "late_max_ms": rounded(max(level.lateness_ms, default=float("nan"))),
        "gaps_over_30ms": level.late_gaps, "underruns": level.underruns,
        "underruns_per_min": rounded(level.underruns / level.answer_minutes if level.answer_minutes else float("nan"), 2),
        "starved": level.starved,
        "kernel_late_p50_ms": rounded(percentile(level.kernel_lateness_ms, .5)),
        "kernel_late_p99_ms": rounded(percentile(level.kernel_lateness_ms, .99)),
        "kernel_late_max_ms": rounded(max(level.kernel_lateness_ms, default=float("nan"))),
        "kernel_underruns": level.kernel_underruns,
        "server_cores": rounded(level.cores, 2), "cpu_ms_per_call_s": rounded(level.cpu_ms_per_call_s),
        "rss_peak_mb": rounded(level.rss_peak_mb), "rss_idle_mb": rounded(level.rss_idle_mb),
        "rss_mb_per_call": rounded((level.rss_peak_mb - level.rss_idle_mb) / level.calls, 2),
        "clock_p50_ms": rounded(percentile(level.clock_ms, .5), 2),
        "clock_p99_ms": rounded(percentile(level.clock_ms, .99), 2),
        "clock_max_ms": rounded(max(level.clock_ms, default=float("nan"))), "clock_resets": level.clock_resets,
        "send_p50_ms": rounded(percentile(level.send_ms, .5), 2),
        "send_p99_ms": rounded(percentile(level.send_ms, .99), 2),
        "send_max_ms": rounded(max(level.send_ms, default=float("nan"))),
        "server_user_cores": rounded(level.user_cores, 2),
        "made_up_silence_frames": level.made_up_frames, "made_up_silence_runs": level.made_up_runs,
        "made_up_share": rounded(level.made_up_frames / level.caller_frames if level.caller_frames else float("nan"), 4),
        "server_thread_cores": {kind: round(cores, 3) for kind, cores in
                                sorted(level.thread_cores.items(), key=lambda item: -item[1]) if cores >= 0.005},
        "reply_p50_ms": rounded(percentile(level.reply_ms, .5), 0),
        "reply_p99_ms": rounded(percentile(level.reply_ms, .99), 0),
        "fillers": level.fillers, "driver_cores": rounded(level.driver_cores, 2),
        "emulator_cores": rounded(level.emulator_cores, 2),
        "machine_idle": rounded(level.machine_idle, 3), "machine_steal": rounded(level.machine_steal, 3),
        "driver_sender_late_p99_ms": rounded(percentile(level.sender_late_ms, .99), 2),
        "calls_made": level.calls_made, "errors": level.errors, "route_ends": level.ends,
        "server_log": level.log_counts, "stored": level.stored,
    }


def print_report(levels: list[Level], args: argparse.Namespace) -> None:
    print(f"\nReal-time calls over AudioSocket: {args.seconds:.0f} s measured per call count, answers of "
          f"{args.answer_seconds:g} s, {args.questions} questions per call, {args.workers} server process(es), "
          f"{os.cpu_count()} cores (server, driver and emulators on this machine)\n")
    header = (f"{'calls':>5} {'answers':>7} {'late p50':>8} {'p99':>6} {'max':>6} {'krn p99':>7} {'gaps>30':>7} {'under>40':>8} "
              f"{'/min':>6} {'starved':>7} {'cores':>5} {'ms/call-s':>9} {'RSS MB':>7} {'MB/call':>7} "
              f"{'clock p99':>9} {'send p99':>8} {'drv cores':>9}")
    print(header)
    print("-" * len(header))
    rows = [summary(level) for level in levels]

    def show(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for row in rows:
        print(f"{row['calls']:>5} {row['answers']:>7} {show(row['late_p50_ms'], '8.1f')} {show(row['late_p99_ms'], '6.1f')} "
              f"{show(row['late_max_ms'], '6.0f')} {show(row['kernel_late_p99_ms'], '7.1f')} {row['gaps_over_30ms']:>7} {row['underruns']:>8} "
              f"{show(row['underruns_per_min'], '6.2f')} {row['starved']:>7} {show(row['server_cores'], '5.2f')} "
              f"{show(row['cpu_ms_per_call_s'], '9.1f')} {show(row['rss_peak_mb'], '7.0f')} "
              f"{show(row['rss_mb_per_call'], '7.2f')} {show(row['clock_p99_ms'], '9.2f')} "
              f"{show(row['send_p99_ms'], '8.1f')} {show(row['driver_cores'], '9.2f')}")
    print()
    previous = None
    for level, row in zip(levels, rows):
        slope = ""
        if previous is not None and row["calls"] > previous["calls"]:
            extra = (row["rss_peak_mb"] - previous["rss_peak_mb"]) / (row["calls"] - previous["calls"])
            slope = f" ({extra:.2f} MB per call more than at {previous['calls']})"
        previous = row
        print(f"{row['calls']:>3} calls: reply p50 {show(row['reply_p50_ms'], '.0f')} ms, p99 "
              f"{show(row['reply_p99_ms'], '.0f')} ms after the speech ended; fillers {row['fillers']}; "
              f"calls made {row['calls_made']}; idle RSS {show(row['rss_idle_mb'], '.0f')} MB{slope}; media clock p50 "
              f"{show(row['clock_p50_ms'], '.2f')} / max {show(row['clock_max_ms'], '.0f')} ms, resets "
              f"{show(row['clock_resets'], 'd')}; emulators {show(row['emulator_cores'], '.2f')} cores; driver "
              f"sender late p99 {show(row['driver_sender_late_p99_ms'], '.1f')} ms")
        print(f"          machine idle {show(row['machine_idle'], '.0%')}, stolen by the hypervisor "
              f"{show(row['machine_steal'], '.1%')}; server CPU {show(row['server_cores'], '.2f')} cores, of which user "
              f"{show(row['server_user_cores'], '.2f')}; last frame of a tick sent p50 {show(row['send_p50_ms'], '.1f')}"
              f" / max {show(row['send_max_ms'], '.0f')} ms after the tick's time; silence made up for caller "
              f"audio not yet read: {row['made_up_silence_frames']} frames in {row['made_up_silence_runs']} gaps "
              f"({show(row['made_up_share'], '.2%')} of the callers' frames)")
        if row["server_thread_cores"]:
            print("          server threads (cores): " + ", ".join(
                f"{kind} {cores:.2f}" for kind, cores in list(row["server_thread_cores"].items())[:8]))
        problems = {**row["errors"], **({"blocked sends": level.send_blocked} if level.send_blocked else {})}
        print(f"          errors {problems or 'none'}; route ends {row['route_ends'] or '-'}; "
              f"server log {row['server_log'] or 'clean'}")
        print(f"          stored {row['stored']}")
        for sample in level.log_samples:
            print(f"          log: {sample}")
    target = next((r for r in rows if r["calls"] == 50), None)
    if target is not None:
        met = (target["late_p99_ms"] is not None and target["late_p99_ms"] <= 20 and target["underruns"] == 0
               and target["answers"] > 0)
        print(f"\ntarget (50 calls: p99 lateness <= 20 ms, no underrun inside an answer): {'met' if met else 'NOT met'}")
    print(json.dumps({"benchmark": "live_load", "seconds": args.seconds, "answer_seconds": args.answer_seconds,
                      "workers": args.workers, "levels": rows}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="10,25,50,75", help="concurrent calls, comma-separated (run in turn)")
    parser.add_argument("--seconds", type=float, default=45, help="measured window per call count")
    parser.add_argument("--ramp", type=float, default=5, help="seconds over which the callers start")
    parser.add_argument("--answer-seconds", type=float, default=3.0, help="length of each (one-sentence) answer")
    parser.add_argument("--tts-chunk-delay", type=float, default=0.0,
                        help="seconds between the emulated voice's 100 ms chunks (0: back to back)")
    parser.add_argument("--questions", type=int, default=2, help="questions per call before hanging up")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    parser.add_argument("--thread-cpu", action="store_true",
                        help="sample the server's CPU by thread kind every second (costs it about 1%%)")
    parser.add_argument("--keep", type=Path, help="keep each count's config, log and database under this (new) directory")
    parser.add_argument("--serve-emulators", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-workers", type=int, default=256, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_emulators is not None:
        serve_emulators(args.serve_emulators, args.grpc_workers, args.tts_chunk_delay)
        return 0
    counts = [int(c) for c in args.calls.split(",") if c.strip()]
    args.grpc_workers = max(args.grpc_workers, 2 * max(counts) + 16)
    with tempfile.TemporaryDirectory(prefix="live-load-") as temporary:
        data = Path(temporary)
        if args.keep is not None:
            args.keep.mkdir(parents=True)
            data = args.keep
        with (data / "emulators.log").open("w") as emulator_log:
            emulators = Emulators(args.answer_seconds, args.grpc_workers, args.tts_chunk_delay, emulator_log)
            try:
                levels = run_all(counts, args, emulators, data)
            finally:
                emulators.close()
    print_report(levels, args)
    return 0 if all(level.answers for level in levels) else 1


def run_all(counts: list[int], args: argparse.Namespace, emulators: Emulators, data: Path) -> list[Level]:
    """One server for every call count (warmed up first), then what it recorded about each."""
    levels: list[Level] = []
    questions = make_questions(data)
    clock_file = data / "clock.json"
    config = write_config(data, emulators, max(counts), args.log_level)
    server = start_server(config, max(counts), clock_file, args.thread_cpu, args.workers)
    try:
        print("... warming up (2 calls)", file=sys.stderr, flush=True)
        warm = Tally()
        media = Media()
        media.start()
        warm_up(media, questions, warm)
        media.stop()
        if warm.errors:
            print(f"warm-up calls failed: {dict(warm.errors)}", file=sys.stderr)
        time.sleep(1)
        idle = rss_mb(server.pid)
        for calls in counts:
            print(f"... {calls} concurrent calls", file=sys.stderr, flush=True)
            level = run_level(calls, args, server, emulators, questions, data / "voiceassist.log")
            level.rss_idle_mb = idle
            levels.append(level)
    finally:
        stop_server(server)
    clocks = []
    for path in data.glob(f"{clock_file.name}.*"):  # one per server process
        try:
            clocks.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    spooled = len(list((data / "db-spool").glob("*.json")))
    for level in levels:
        add_server_records(level, clocks)
        check_database(data / "voiceassist.db", level)
        if spooled:
            level.stored["spooled (whole run, not in the database)"] = spooled
    return levels


def add_server_records(level: Level, clocks: list[dict[str, Any]]) -> None:
    """What the instrumented server recorded during ``level``'s window."""
    start, end = level.window
    level.clock_resets = 0 if clocks else None
    for clock in clocks:
        level.clock_ms += [late * 1000 for at, late in clock["ticks"] if start <= at <= end]
        level.clock_resets = (level.clock_resets or 0) + sum(1 for at in clock["resets"] if start <= at <= end)
        level.send_ms += [late * 1000 for at, late in clock["spread"] if start <= at <= end]
        level.made_up_frames += sum(frames for at, frames in clock["filled"] if start <= at <= end)
        level.made_up_runs += sum(1 for at, frames in clock["filled"] if start <= at <= end)
        samples = [(at, totals) for at, totals in clock["threads"] if start <= at <= end]
        if len(samples) >= 2:
            (first_at, first), (last_at, last) = samples[0], samples[-1]
            for kind, cpu in last.items():
                level.thread_cores[kind] = level.thread_cores.get(kind, 0.0) + (cpu - first.get(kind, 0.0)) / (last_at - first_at)


if __name__ == "__main__":
    sys.exit(main())
