"""The AudioSocket pump: a small process of its own that paces every call's outgoing audio.

AudioSocket plays what we send the moment it arrives, so each 20 ms frame must leave on time. In
the process that also runs the conversations, the clock shares one interpreter lock with dozens of
threads doing voice detection, recognition streams, answers and storage: under load it waits for
the lock and frames go out late or bunched (the garbled, sped-up audio that is the most reported
fault of real-time phone assistants). The pump holds nothing but the calls' sockets and a
:class:`~.legs.MediaClock`, so its clock is never kept waiting by the conversations' work.

How the two processes share a call. The server keeps the listening socket and the call-id check;
once a connection has said its call id, the server sends the connected socket to the pump (with
``SCM_RIGHTS`` over the ``control`` pair the server created when it started the pump) together
with one end of two new socket pairs for that call:

* ``events`` (pump to server): ``A`` + arrival time + the bytes Asterisk sent, as they came, every
  :data:`INBOUND_BATCH_SECONDS` (the time is the last byte's; the server parses and checks the frames), ``K`` + time + a mark's name when the audio before it
  has been sent, ``E`` when Asterisk closed the connection;
* ``commands`` (server to pump, with replies): ``G`` (the call was accepted: start sending;
  until then nothing goes to Asterisk), ``P`` + PCM to play, ``M`` + a mark's name, ``R`` +
  a sample rate, ``C`` (drop what is queued; replies ``c`` with the seconds sent since the queue
  was last empty), ``Q`` (replies ``q`` with the seconds still queued), ``H`` (send Asterisk the
  hang-up frame and close), ``X`` (close). Replies carry the request's number.

The pump trusts nothing but its parent: it has no listening socket, only the pair inherited at
start, and it exits when its parent closes that pair (or dies).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from ..logs import logger
from .legs import MediaClock, Playout

# Largest message on a call's pairs: a read from Asterisk (64 KiB) with its header.
MAX_MESSAGE = 65536 + 64
# PCM per play command (a SOCK_SEQPACKET message must fit the socket's buffer at once).
PLAY_CHUNK = 32000
ARRIVAL = struct.Struct("<d")
REQUEST = struct.Struct("<I")
REPLY = struct.Struct("<Id")
# Frames kept for a peer that has stopped reading (0.2 s); beyond it the oldest unsent ones go.
MAX_UNSENT_FRAMES = 10
# What Asterisk sends is passed on at the clock's ticks, all that came since the last one in one
# message (fewer wake-ups of the server's threads when reads come close together). Two frames a
# message (0.04) halved them again but made the end of the caller's question 20 ms later on
# average, and the real-time flow's overhead beyond endpointing and providers went from 90 to 110 ms.
INBOUND_BATCH_SECONDS = 0.02
# How long the server waits for the pump's answer to a command before it calls the leg broken.
REPLY_TIMEOUT = 2.0
PUMP_START_TIMEOUT = 15.0
MAX_STATS = 200_000           # the largest stats answer: one message on the pair (about 2 000 ticks)


def _seqpacket_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


# == the server's side =================================================================================
class PumpLink:
    """The server's handle on its pump process: start it, hand it calls, ask it for its clock's
    figures, stop it. Thread-safe; a pump that died is started again for the next call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        ours, theirs = _seqpacket_pair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "voiceassist.asterisk.media_pump", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=False)
        finally:
            theirs.close()
        # Ready once its clock runs: a call handed over before would start late.
        ours.settimeout(PUMP_START_TIMEOUT)
        try:
            ready = ours.recv(16)
        except OSError:
            ready = b""
        ours.settimeout(None)
        if ready != b"ready":
            ours.close()
            self._process.kill()
            self._process.wait()
            raise OSError("the AudioSocket pump process did not start")
        self._control = ours

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def attach(self, asterisk: socket.socket, sample_rate: int) -> tuple[socket.socket, socket.socket]:
        """Hand ``asterisk`` (a connected AudioSocket whose call id has been read) to the pump;
        return the server's ends of the call's ``events`` and ``commands`` pairs. The server's
        copy of ``asterisk`` is closed: from now on only the pump holds the connection."""
        events_ours, events_theirs = _seqpacket_pair()
        commands_ours, commands_theirs = _seqpacket_pair()
        try:
            with self._lock:
                if self._process is None or self._process.poll() is not None:
                    if self._process is not None:
                        logger.error("[LIVE] the AudioSocket pump ended (status %s); starting it again",
                                     self._process.returncode)
                        self._close_control()
                    self._start_locked()
                assert self._control is not None
                socket.send_fds(self._control, [b"L" + REQUEST.pack(sample_rate)],
                                [asterisk.fileno(), events_theirs.fileno(), commands_theirs.fileno()])
        except BaseException:
            events_ours.close()
            commands_ours.close()
            raise
        finally:
            events_theirs.close()
            commands_theirs.close()
        asterisk.close()
        return events_ours, commands_ours

    def stats(self, since: float = 0.0, timeout: float = 2.0) -> dict[str, Any]:
        """The pump's clock since ``since`` (time.monotonic(); the pump keeps the last five
        minutes, and answers with at most the last 2 000): ``ticks``, each [scheduled time, seconds it came late, seconds from then to its
        last frame sent], and ``resets`` (schedule restarts since it started)."""
        with self._lock:
            if self._control is None:
                return {}
            self._control.settimeout(timeout)
            try:
                self._control.send(b"S" + ARRIVAL.pack(since))
                answer = self._control.recv(MAX_STATS)
            except OSError:
                return {}
            finally:
                self._control.settimeout(None)
        try:
            return dict(json.loads(answer))
        except ValueError:
            return {}

    def stop(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._close_control()
            process, self._process = self._process, None
        if process is None:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None


# == the pump's side ===================================================================================
class _PumpedLeg:
    """One call in the pump: paces its queued audio to Asterisk and passes everything else on.
    Runs wholly on the clock's thread (ticks, reads of both sockets, commands)."""

    def __init__(self, clock: MediaClock, asterisk: socket.socket, events: socket.socket,
                 commands: socket.socket, sample_rate: int) -> None:
        from .audiosocket import KIND_FOR_RATE

        self._kinds = KIND_FOR_RATE
        self._clock = clock
        self.asterisk = asterisk
        self.events = events
        self.commands = _Commands(self)
        self.commands_socket = commands
        self.playout = Playout(sample_rate)
        self._outbound: deque[bytes] = deque()
        self._sent_of_head = 0
        self.closed = False
        self.dropped_events = 0       # messages the server did not read in time
        self.dropped_bytes = 0        # audio a stalled Asterisk did not take
        self._inbound = bytearray()   # what Asterisk sent, not passed on yet
        self._inbound_since = 0.0     # when its first bytes came
        self._inbound_at = 0.0        # when its last bytes came (the batch's time: the caller's
                                      # audio is complete up to then)
        for sock in (asterisk, events, commands):
            sock.setblocking(False)
        asterisk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- to Asterisk ----------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self._inbound and now - self._inbound_since >= INBOUND_BATCH_SECONDS - 0.005:
            self._pass_on_inbound()
        marks, pcm = self.playout.take()
        if pcm is None:
            # Silence, as a phone sends it: Asterisk's AudioSocket application ends the call after
            # 2 s in which neither side sent anything (a quiet caller on a line without frames).
            pcm = bytes(self.playout.frame)
        self._send(struct.pack(">BH", self._kinds[self.playout.sample_rate], len(pcm)) + pcm)
        for name in marks:
            self._event(b"K" + ARRIVAL.pack(now) + name.encode("utf-8", "replace"))

    def _send(self, data: bytes, drop_if_full: bool = True) -> None:
        """Send without ever blocking the clock: what the socket does not take now waits for the
        next tick; if Asterisk stops reading altogether, whole frames are dropped (never part of
        one: Asterisk would read the rest as a header), not queued forever."""
        if self.closed:
            return
        self._outbound.append(data)
        while self._outbound:
            head = self._outbound[0]
            try:
                sent = self.asterisk.send(head[self._sent_of_head:] if self._sent_of_head else head)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close(tell=True)
                return
            self._sent_of_head += sent
            if self._sent_of_head < len(head):
                break
            self._outbound.popleft()
            self._sent_of_head = 0
        if drop_if_full and len(self._outbound) > MAX_UNSENT_FRAMES:
            keep = 1 if self._sent_of_head else 0   # the frame already partly on the wire
            while len(self._outbound) > keep + 1:
                self.dropped_bytes += len(self._outbound[keep])
                del self._outbound[keep]

    # -- from Asterisk --------------------------------------------------------------------------------
    def read_ready(self) -> bool:
        if self.closed:
            return False
        try:
            chunk = self.asterisk.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.close(tell=True)
            return False
        now = time.monotonic()
        if not self._inbound:
            self._inbound_since = now
        self._inbound_at = now
        self._inbound += chunk
        if len(self._inbound) >= MAX_MESSAGE - 64:
            self._pass_on_inbound()
        return True

    def _pass_on_inbound(self) -> None:
        if self._inbound:
            self._event(b"A" + ARRIVAL.pack(self._inbound_at) + bytes(self._inbound))
            self._inbound.clear()

    def _event(self, message: bytes) -> None:
        try:
            self.events.send(message)
        except (BlockingIOError, InterruptedError):
            # The server has stopped reading this call (its buffer holds seconds of audio):
            # what does not fit is dropped, as Asterisk drops what a stalled peer does not read.
            self.dropped_events += 1
        except OSError:
            self.close(tell=False)

    # -- from the server ------------------------------------------------------------------------------
    def command(self, message: bytes) -> bool:
        """Carry out one command; False when the leg is over."""
        kind, body = message[:1], message[1:]
        if kind == b"P":
            self.playout.add(body)
        elif kind == b"M":
            self.playout.add_mark(body.decode("utf-8", "replace"))
        elif kind == b"G":
            self._clock.add(self)   # the call was accepted: its audio (silence until then) starts
        elif kind == b"R":
            self.playout.set_rate(REQUEST.unpack(body[:4])[0])
        elif kind == b"C":
            self._reply(b"c", body, self.playout.clear())
        elif kind == b"Q":
            self._reply(b"q", body, self.playout.queued_seconds())
        elif kind == b"H":
            from .audiosocket import HANGUP_FRAME

            self.playout.clear()
            self._send(HANGUP_FRAME, drop_if_full=False)
            self.close(tell=False)
            return False
        else:  # X, or anything else: our own server would not send it
            self.close(tell=False)
            return False
        return True

    def _reply(self, kind: bytes, request: bytes, value: float) -> None:
        number = REQUEST.unpack(request[:4])[0] if len(request) >= 4 else 0
        try:
            self.commands_socket.send(kind + REPLY.pack(number, value))
        except OSError:
            self.close(tell=False)

    def close(self, tell: bool) -> None:
        if self.closed:
            return
        if tell:
            self._pass_on_inbound()
        self.closed = True
        if tell:
            self._event(b"E")
        self._clock.remove(self)
        try:
            self.asterisk.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # Closed by the clock once it no longer reads them (their numbers could be reused).
        self._clock.unwatch(self.asterisk, close=True)
        self._clock.unwatch(self.commands_socket, close=True)
        self.events.close()


class _Commands:
    """The reader of a call's command socket (a :class:`~.legs.Reading` for the clock)."""

    def __init__(self, leg: _PumpedLeg) -> None:
        self._leg = leg

    def read_ready(self) -> bool:
        leg = self._leg
        while not leg.closed:
            try:
                message = leg.commands_socket.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                message = b""
            if not message:   # the server let go of the call
                leg.close(tell=False)
                return False
            if not leg.command(message):
                return False
        return False


def _serve(control: socket.socket) -> None:
    clock = MediaClock("voiceassist-audiosocket-pump")
    clock.start()
    control.send(b"ready")
    try:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(control, 64, 3)
            except InterruptedError:
                continue
            if not message:
                return   # the server closed the pair (or died): nothing left to pace for
            if message[:1] == b"L" and len(fds) == 3:
                rate = REQUEST.unpack(message[1:5])[0]
                asterisk, events, commands = (socket.socket(fileno=fd) for fd in fds)
                leg = _PumpedLeg(clock, asterisk, events, commands, rate)
                clock.watch(asterisk, leg)
                clock.watch(commands, leg.commands)
            elif message[:1] == b"S" and len(message) == 1 + ARRIVAL.size:
                since = ARRIVAL.unpack_from(message, 1)[0]
                recent = [tick for tick in list(clock.ticks) if tick[0] > since][-MAX_STATS // 100:]
                recent = [(round(due, 4), round(late, 6), round(spread, 6)) for due, late, spread in recent]
                control.send(json.dumps({"ticks": recent, "resets": clock.resets}).encode())
            else:
                for fd in fds:
                    os.close(fd)
    finally:
        clock.stop()


def main(argv: list[str]) -> int:
    # Ctrl-C on a `serve` in a terminal reaches the whole process group: the server decides when
    # the pump ends (by closing the pair), so the pump itself ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        control = socket.socket(fileno=int(argv[0]))
    except (IndexError, ValueError, OSError):
        print("voiceassist.asterisk.media_pump: started by the AudioSocket server only", file=sys.stderr)
        return 2
    _serve(control)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
