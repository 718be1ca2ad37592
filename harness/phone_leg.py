"""A media leg with a scripted caller behind it, in real time, without Asterisk or a network.

:class:`PhoneLeg` implements :class:`voiceassist.call.media.MediaLeg` as a phone line would: a
clock thread ticks every 20 ms (on a fixed schedule); each tick hands the conversation one frame
of what the caller says (their scripted speech, optionally plus an echo of what they hear, else
silence) and plays one 20 ms frame of the assistant's queued audio into :attr:`heard`, the
caller's recording. Marks fire when the audio before them has been played; keys and a hang-up
happen at scripted times. The rig tests do the same through the real Asterisk and transports;
this one lets the conversation engine be tested quickly and exactly.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from voiceassist.call.media import FRAME_SECONDS, MediaEvent, MediaEventKind, frame_bytes


@dataclass
class _Say:
    at: float
    pcm: bytes


class PhoneLeg:
    call_id: str
    sample_rate: int

    def __init__(self, sample_rate: int = 8000, call_id: str = "phone-leg", *, echo_db: float | None = None,
                 echo_delay: float = 0.06, silence_suppression: bool = False,
                 stall: tuple[float, float] | None = None) -> None:
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.frame = frame_bytes(sample_rate)
        self.heard = bytearray()                  # what the caller heard, 20 ms per tick from the start
        self.sent_frames = 0                      # frames of the assistant's audio played
        self.stops: list[float] = []              # seconds into the call of each stop_playing()
        self.marks_fired: list[tuple[str, float]] = []
        self.hung_up_by_us = threading.Event()
        self._says: list[_Say] = []
        self._keys: list[tuple[float, str]] = []
        self._hangup_at: float | None = None
        self._echo = None if echo_db is None else 10 ** (echo_db / 20)
        # A phone with silence suppression (or Asterisk's Local channel) sends no frame while quiet.
        self._suppress = silence_suppression
        # (from, seconds): the frames the caller sends meanwhile reach the conversation only at the
        # end, as with a server too busy to take them in; audio_waiting() says so meanwhile.
        self._stall = stall
        self._held: list[MediaEvent] = []
        self._echo_delay_frames = max(1, int(round(echo_delay / FRAME_SECONDS)))
        self._events: queue.Queue[MediaEvent] = queue.Queue()
        self._lock = threading.Lock()
        self._queue: deque[bytes | str] = deque()  # audio frames and mark names
        self._queued_frames = 0
        self._partial = bytearray()  # the tail of the last play(), less than a frame
        self._run_frames = 0                      # frames played since the queue was last empty
        self._closed = threading.Event()
        self._tick = 0
        self.started = 0.0
        self._thread = threading.Thread(target=self._clock, daemon=True, name="phone-leg")

    # -- the script (before start) ---------------------------------------------------------------------
    def say(self, pcm: bytes, at: float) -> None:
        """The caller says ``pcm`` (PCM at the leg's rate) starting ``at`` seconds into the call."""
        self._says.append(_Say(at, pcm))

    def press(self, digit: str, at: float) -> None:
        self._keys.append((at, digit))

    def hang_up_at(self, at: float) -> None:
        self._hangup_at = at

    def start(self) -> PhoneLeg:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def wait_closed(self, timeout: float) -> bool:
        return self._closed.wait(timeout)

    # -- the caller's side, per tick ---------------------------------------------------------------------
    def _caller_frame(self, tick: int) -> bytes:
        start = tick * FRAME_SECONDS
        samples = np.zeros(self.frame // 2, dtype=np.float64)
        for say in self._says:
            offset = int(round((start - say.at) * self.sample_rate)) * 2
            if 0 <= offset < len(say.pcm):
                piece = np.frombuffer(say.pcm[offset:offset + self.frame], dtype="<i2")
                samples[: len(piece)] += piece
        if self._echo is not None:
            back = (tick - self._echo_delay_frames) * self.frame
            if back >= 0 and back + self.frame <= len(self.heard):
                samples += np.frombuffer(bytes(self.heard[back:back + self.frame]), dtype="<i2") * self._echo
        return np.clip(samples, -32768, 32767).astype("<i2").tobytes()

    def _clock(self) -> None:
        while not self._closed.is_set():
            tick = self._tick
            due = self.started + (tick + 1) * FRAME_SECONDS
            time.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            seconds = tick * FRAME_SECONDS
            if self._hangup_at is not None and seconds >= self._hangup_at:
                self._close()
                return
            for at, digit in list(self._keys):
                if seconds >= at:
                    self._keys.remove((at, digit))
                    self._events.put(MediaEvent(MediaEventKind.DTMF, digit=digit, at=now))
            self._play_one(now)
            frame = self._caller_frame(tick)
            if not (self._suppress and not any(frame)):
                self._deliver(MediaEvent(MediaEventKind.AUDIO, audio=frame, at=now), seconds)
            self._tick += 1

    def _stalled(self, seconds: float) -> bool:
        return self._stall is not None and self._stall[0] <= seconds < self._stall[0] + self._stall[1]

    def _deliver(self, event: MediaEvent, seconds: float) -> None:
        if self._stalled(seconds):
            self._held.append(event)
            return
        for held in self._held:
            self._events.put(held)
        self._held.clear()
        self._events.put(event)

    def _play_one(self, now: float) -> None:
        with self._lock:
            frame = None
            while self._queue and isinstance(self._queue[0], str):
                name = self._queue.popleft()
                assert isinstance(name, str)
                self.marks_fired.append((name, self._tick * FRAME_SECONDS))
                self._events.put(MediaEvent(MediaEventKind.MARK, mark=name, at=now))
            if self._queue:
                item = self._queue.popleft()
                assert isinstance(item, bytes)
                frame = item
                self._queued_frames -= 1
                self._run_frames += 1
                self.sent_frames += 1
            elif self._partial:  # nothing else came in time: the short tail goes out padded
                frame = bytes(self._partial.ljust(self.frame, b"\0"))
                self._partial.clear()
            elif self._queued_frames == 0:
                self._run_frames = 0
        self.heard += frame if frame is not None else b"\0" * self.frame

    def _close(self) -> None:
        self._closed.set()
        self._events.put(MediaEvent(MediaEventKind.CLOSED, at=time.monotonic()))

    # -- MediaLeg ------------------------------------------------------------------------------------
    def next_event(self, timeout: float) -> MediaEvent | None:
        if self._closed.is_set() and self._events.empty():
            return MediaEvent(MediaEventKind.CLOSED, at=time.monotonic())
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def play(self, pcm: bytes) -> None:
        # As the real legs do (asterisk/legs.py: Playout): a piece shorter than a frame waits for
        # the next play, so audio handed over in odd-sized pieces plays without holes.
        with self._lock:
            self._partial += pcm
            whole = len(self._partial) - len(self._partial) % self.frame
            for start in range(0, whole, self.frame):
                self._queue.append(bytes(self._partial[start:start + self.frame]))
                self._queued_frames += 1
            del self._partial[:whole]

    def _pad_partial(self) -> None:
        if self._partial:
            self._queue.append(bytes(self._partial.ljust(self.frame, b"\0")))
            self._queued_frames += 1
            self._partial.clear()

    def mark(self, name: str) -> None:
        with self._lock:
            self._pad_partial()
            self._queue.append(name)

    def stop_playing(self) -> float:
        with self._lock:
            self._queue.clear()
            self._partial.clear()
            self._queued_frames = 0
            run, self._run_frames = self._run_frames, 0
            self.stops.append(self._tick * FRAME_SECONDS)
        return run * FRAME_SECONDS

    def queued_seconds(self) -> float:
        with self._lock:
            return self._queued_frames * FRAME_SECONDS + len(self._partial) / 2 / self.sample_rate

    def audio_waiting(self) -> bool:
        return bool(self._held)

    def hang_up(self) -> None:
        self.hung_up_by_us.set()
        self._closed.set()

    # -- for the test's assertions --------------------------------------------------------------------
    def heard_pcm(self) -> bytes:
        return bytes(self.heard)
