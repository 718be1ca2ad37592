"""What the legs of both media transports share: the caller's events on their way to the
conversation, and the assistant's audio on its way to the caller.

:class:`CallerEvents` is one leg's inbox: the caller's audio re-cut into whole 20 ms frames
(Asterisk may send other sizes; the voice detector wants 20 ms), keys, marks, and the end.

:class:`Playout` is one leg's queue: the PCM the conversation queued, cut into whole 20 ms frames
(a piece shorter than a frame waits for the next ``play`` and is padded with silence only when
nothing follows it in time), with the conversation's marks between them, and the count of frames
sent since the queue was last empty (what the caller has heard of the current answer).

:class:`SocketWatcher` is one thread that reads many legs' sockets as data arrives.
:class:`MediaClock` is a watcher that also ticks every 20 ms on a fixed schedule and
lets every open leg send what is due (in the AudioSocket pump's process, :mod:`.media_pump`). One clock for all calls instead of a sleeping thread per
call: fifty calls are fifty cheap function calls per tick, not fifty threads fighting over the
interpreter to wake up on time. A tick that comes late is caught up at once (the frames it owed
go out back to back) for up to :data:`MAX_CATCH_UP` ticks; past that the schedule restarts from
now, because frames that late are better late than bunched.
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading
import time
from collections import deque
from typing import Protocol

from ..call.media import FRAME_SECONDS, MediaEvent, MediaEventKind, frame_bytes
from ..logs import logger

MAX_CATCH_UP = 5
# Ticks kept for the statistics (five minutes of ticks).
TICKS_KEPT = 15000


class CallerEvents:
    """One leg's events for the conversation's thread (see the module's docstring); ``audio``,
    ``put`` and ``close`` are for the leg's reader, ``next`` for the conversation."""

    def __init__(self) -> None:
        self._queue: queue.Queue[MediaEvent] = queue.Queue()
        self._inbound = bytearray()                 # caller audio not yet a whole 20 ms frame
        self._closed = threading.Event()
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def audio(self, pcm: bytes, sample_rate: int, at: float) -> None:
        self._inbound += pcm
        size = frame_bytes(sample_rate)
        while len(self._inbound) >= size:
            self._queue.put(MediaEvent(MediaEventKind.AUDIO, audio=bytes(self._inbound[:size]), at=at))
            del self._inbound[:size]

    def put(self, event: MediaEvent) -> None:
        self._queue.put(event)

    def close(self) -> bool:
        """Report the end once; True the first time."""
        with self._lock:
            if self._closed.is_set():
                return False
            self._closed.set()
        self._queue.put(MediaEvent(MediaEventKind.CLOSED, at=time.monotonic()))
        return True

    def next(self, timeout: float) -> MediaEvent | None:
        if self._closed.is_set() and self._queue.empty():
            return MediaEvent(MediaEventKind.CLOSED, at=time.monotonic())
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class Playout:
    """One leg's queued audio and marks; safe from any thread."""

    def __init__(self, sample_rate: int) -> None:
        self._lock = threading.Lock()
        self._items: deque[bytes | str] = deque()   # whole frames, and mark names between them
        self._partial = bytearray()                 # the tail of the last play(), less than a frame
        self._frames = 0                            # frames in _items
        self._run_frames = 0                        # frames sent since the queue was last empty
        self.sample_rate = sample_rate
        self.frame = frame_bytes(sample_rate)

    def set_rate(self, sample_rate: int) -> None:
        with self._lock:
            self.sample_rate = sample_rate
            self.frame = frame_bytes(sample_rate)

    def add(self, pcm: bytes) -> None:
        if not pcm:
            return
        with self._lock:
            self._partial += pcm
            whole = len(self._partial) - len(self._partial) % self.frame
            for start in range(0, whole, self.frame):
                self._items.append(bytes(self._partial[start:start + self.frame]))
            self._frames += whole // self.frame
            del self._partial[:whole]

    def add_mark(self, name: str) -> None:
        with self._lock:
            self._pad_partial()
            self._items.append(name)

    def _pad_partial(self) -> None:
        if self._partial:
            self._items.append(bytes(self._partial.ljust(self.frame, b"\0")))
            self._frames += 1
            self._partial.clear()

    def take(self) -> tuple[list[str], bytes | None]:
        """The marks now at the head of the queue (their audio has been sent), then the next frame
        (None: nothing to send; the run of the current answer is over)."""
        marks: list[str] = []
        with self._lock:
            while self._items and isinstance(self._items[0], str):
                marks.append(str(self._items.popleft()))
            if not self._items:
                # Nothing else came in time: the short tail goes out padded (an underrun anyway).
                self._pad_partial()
            if self._items:
                frame = self._items.popleft()
                assert isinstance(frame, bytes)
                self._frames -= 1
                self._run_frames += 1
                return marks, frame
            self._run_frames = 0
            return marks, None

    def clear(self) -> float:
        """Drop everything queued; the seconds sent since the queue was last empty."""
        with self._lock:
            self._items.clear()
            self._partial.clear()
            self._frames = 0
            run, self._run_frames = self._run_frames, 0
        return run * FRAME_SECONDS

    def queued_seconds(self) -> float:
        with self._lock:
            return (self._frames * self.frame + len(self._partial)) / 2 / self.sample_rate


class Ticking(Protocol):
    def tick(self, now: float) -> None:
        """Send what is due at ``now``; must not block."""
        ...


class Reading(Protocol):
    def read_ready(self) -> bool:
        """Read what has arrived on the leg's socket (never blocks); False when the leg is over."""
        ...


class SocketWatcher:
    """One thread that reads many sockets: each watched socket's reader is called whenever data
    has arrived (:meth:`watch`), so that one thread takes in every call's audio instead of one
    thread per call waking for each 20 ms frame and fighting the others for the interpreter."""

    POLL_SECONDS = FRAME_SECONDS   # how soon a newly watched socket is read

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._selector = selectors.DefaultSelector()
        # (socket, its reader or None to stop reading it, set when done, close it once let go)
        self._changes: list[tuple[socket.socket, Reading | None, threading.Event, bool]] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(1.0)
        with self._lock:
            changes, self._changes = self._changes, []
        for sock, _, done, close in changes:
            if close:
                sock.close()
            done.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    def watch(self, sock: socket.socket, reader: Reading) -> threading.Event:
        """Read ``sock`` (non-blocking) with ``reader.read_ready`` whenever data arrives."""
        done = threading.Event()
        with self._lock:
            self._changes.append((sock, reader, done, False))
        return done

    def unwatch(self, sock: socket.socket, close: bool = False) -> threading.Event:
        """Stop reading ``sock``; the event is set once the thread has let go of it (only then may
        the socket be closed: its descriptor number could be reused). With ``close``, the thread
        closes it then itself."""
        done = threading.Event()
        with self._lock:
            self._changes.append((sock, None, done, close))
        if not self.running:
            self._apply_changes()
        return done

    def _apply_changes(self) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for sock, reader, done, close in changes:
            try:
                if reader is None:
                    self._selector.unregister(sock)
                else:
                    self._selector.register(sock, selectors.EVENT_READ, reader)
            except (KeyError, ValueError, OSError):
                pass
            if close:
                sock.close()
            done.set()

    def _read(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            reader: Reading = key.data
            try:
                alive = reader.read_ready()
            except Exception:
                logger.exception("[LIVE] a media leg failed to read")
                alive = False
            if not alive:
                try:
                    self._selector.unregister(key.fileobj)
                except (KeyError, ValueError):
                    pass
        self._apply_changes()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._apply_changes()
            self._read(self.POLL_SECONDS)
        self._selector.close()


class MediaClock(SocketWatcher):
    """The 20 ms clock of a media server's legs (see the module's docstring); it also reads their
    sockets between ticks (:meth:`watch`), so that one thread does all of a server's media I/O."""

    def __init__(self, name: str = "voiceassist-media-clock") -> None:
        super().__init__(name)
        self._legs: set[Ticking] = set()
        # The recent ticks: (scheduled time, seconds it came late, seconds from then to its last
        # frame sent: the legs are sent one after the other).
        self.ticks: deque[tuple[float, float, float]] = deque(maxlen=TICKS_KEPT)
        self.resets = 0                                            # schedule restarts (ticks lost)

    def add(self, leg: Ticking) -> None:
        with self._lock:
            self._legs.add(leg)

    def remove(self, leg: Ticking) -> None:
        with self._lock:
            self._legs.discard(leg)

    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while not self._stopped.is_set():
            self._apply_changes()
            due = start + tick * FRAME_SECONDS
            now = time.monotonic()
            while due > now:
                self._read(due - now)
                now = time.monotonic()
            late = now - due   # kept also when the schedule restarts: the worst ticks must count
            if late > MAX_CATCH_UP * FRAME_SECONDS:
                self.resets += 1
                start, tick = now, 0
            with self._lock:
                legs = list(self._legs)
            for leg in legs:
                try:
                    leg.tick(now)
                except Exception:  # one broken leg must not stop everyone's audio
                    logger.exception("[LIVE] media clock: a leg failed to send")
                    self.remove(leg)
            self.ticks.append((due, late, time.monotonic() - now))
            tick += 1
        self._selector.close()
