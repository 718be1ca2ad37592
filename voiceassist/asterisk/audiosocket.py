"""AudioSocket: the call's audio over TCP, in Asterisk's type-length-value frames.

Asterisk (``AudioSocket(<uuid>,host:port)`` from ``app_audiosocket``, or
``Dial(AudioSocket/host:port/<uuid>/c(slin16))`` from ``chan_audiosocket``) connects to us and
sends, in this order: a UUID frame (kind 0x01, 16 bytes), then the caller's audio as signed
linear frames (0x10 for 8 kHz, 0x12 for 16 kHz, normally 20 ms each), DTMF (0x03, one ASCII
byte, Asterisk 20.14/21.9/22.4 and later), a hang-up (0x00) or an error (0xff). Every frame is one
kind byte and a big-endian 16-bit payload length.

What we send back is played as it arrives: Asterisk does not re-time it, so we pace it ourselves
(one frame per 20 ms on a :class:`~.legs.MediaClock`'s fixed schedule), which is what keeps the
answer from sounding garbled or sped up. The clock runs in a process of its own, the pump
(:mod:`.media_pump`), which holds every call's connection once its call id is accepted here: the
conversations' work in this process can no longer make it late. A barge-in drops what is queued
in the pump: nothing we have not sent yet can reach the caller.

The peer is checked against ``[live] allow`` before a byte is read, the UUID must come within
``[live] connect_timeout``, and the route's acceptor decides whether the UUID belongs to a call
(see :mod:`.live`); anything else gets a hang-up frame and the connection is closed.
"""

from __future__ import annotations

import select
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..call.media import MediaEvent, MediaEventKind, MediaLeg
from ..logs import logger
from .access import ConnectionGate, Network
from .legs import CallerEvents, SocketWatcher
from .media_pump import ARRIVAL, MAX_MESSAGE, PLAY_CHUNK, REPLY, REPLY_TIMEOUT, REQUEST, PumpLink

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_ERROR = 0xFF
# Signed linear audio, by sample rate (0x10 is all that Asterisk before 20.17/22.7 knows).
AUDIO_KINDS = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000,
               0x17: 96000, 0x18: 192000}
KIND_FOR_RATE = {rate: kind for kind, rate in AUDIO_KINDS.items()}
HANGUP_FRAME = bytes([KIND_HANGUP, 0, 0])
# Longest audio frame we accept from Asterisk (0.5 s at 48 kHz); a longer one is not a phone's.
MAX_AUDIO_PAYLOAD = 48000
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# Frames kept for a peer that has stopped reading (0.2 s); beyond it the oldest unsent ones go.
MAX_UNSENT_FRAMES = 10


class AudioSocketError(Exception):
    """The peer broke the protocol (or went away) while we read a frame."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


def _read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    """``size`` bytes from a connection that has not been handed to the clock yet (its call id),
    by ``deadline`` (time.monotonic())."""
    data = bytearray()
    while len(data) < size:
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise AudioSocketError("timed out")
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            continue
        try:
            chunk = sock.recv(size - len(data))
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            raise AudioSocketError(str(exc)) from None
        if not chunk:
            raise AudioSocketError("connection closed")
        data += chunk
    return bytes(data)


class AudioSocketLeg:
    """One call's AudioSocket connection as a :class:`~voiceassist.call.media.MediaLeg`, on the
    server's side: the connection itself is held by the pump (:mod:`.media_pump`), which paces the
    audio queued here and passes on what Asterisk sends; the frames are parsed and checked here.

    Its rate is the one the route asked Asterisk for (AudioSocket says it only with the first
    audio frame): the route's acceptor sets :attr:`sample_rate` before the conversation starts.
    """

    rate_from_control = True

    def __init__(self, call_id: str, events: socket.socket, commands: socket.socket, reader: SocketWatcher,
                 sample_rate: int = 8000) -> None:
        self.call_id = call_id
        self._events_socket = events
        self._reader = reader
        self._commands = commands
        self._commands.settimeout(REPLY_TIMEOUT)
        self._events = CallerEvents()
        self._rate = sample_rate
        self._command_lock = threading.Lock()
        self._request = 0
        self._warned_rate = False
        self._inbound_bytes = bytearray()           # what arrived and is not a whole frame yet
        self._done = threading.Event()              # the leg is over

    # -- MediaLeg ------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._rate

    @sample_rate.setter
    def sample_rate(self, rate: int) -> None:
        if rate not in KIND_FOR_RATE:
            raise ValueError(f"AudioSocket has no frame kind for {rate} Hz")
        self._rate = rate
        self._command(b"R" + REQUEST.pack(rate))

    def next_event(self, timeout: float) -> MediaEvent | None:
        return self._events.next(timeout)

    def play(self, pcm: bytes) -> None:
        for start in range(0, len(pcm), PLAY_CHUNK):
            self._command(b"P" + pcm[start:start + PLAY_CHUNK])

    def mark(self, name: str) -> None:
        self._command(b"M" + name.encode("utf-8"))

    def stop_playing(self) -> float:
        return self._ask(b"C")

    def queued_seconds(self) -> float:
        return self._ask(b"Q")

    def audio_waiting(self) -> bool:
        if self._events.closed:
            return False
        try:
            ready, _, _ = select.select([self._events_socket], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(ready)

    def hang_up(self) -> None:
        if self._events.closed:
            return
        self._command(b"H")
        self._close()

    def begin(self) -> None:
        """The route accepted the call: the pump starts sending (what was queued, else silence),
        and what Asterisk sends reaches the conversation."""
        self._events_socket.setblocking(False)
        self._reader.watch(self._events_socket, self)
        self._command(b"G")

    def wait_closed(self) -> None:
        """Wait (on the connection's own thread, idle) until the leg is over, then let go of the
        command pair (not before: another thread may be sending on it)."""
        self._done.wait()
        with self._command_lock:
            self._commands.close()

    # -- commands to the pump ------------------------------------------------------------------------
    def _command(self, message: bytes) -> None:
        with self._command_lock:
            self._send_command(message)

    def _send_command(self, message: bytes) -> bool:
        if self._done.is_set():
            return False
        try:
            self._commands.send(message)
            return True
        except (BrokenPipeError, ConnectionResetError):
            self._close()   # the pump let go of the call: Asterisk closed it (its event follows)
            return False
        except OSError as exc:
            logger.warning("[LIVE] AudioSocket %s...: the pump did not take a command (%s); closing",
                           self.call_id[:8], exc)
            self._close()
            return False

    def _ask(self, kind: bytes) -> float:
        """A command with an answer (seconds); 0.0 once the leg is over."""
        with self._command_lock:
            self._request += 1
            if not self._send_command(kind + REQUEST.pack(self._request)):
                return 0.0
            try:
                while True:
                    answer = self._commands.recv(64)
                    if not answer:
                        break
                    number, value = REPLY.unpack(answer[1:1 + REPLY.size])
                    if answer[:1] == kind.lower() and number == self._request:
                        return float(value)
                    # an answer to an earlier request that timed out: skip it
            except (OSError, struct.error) as exc:
                logger.warning("[LIVE] AudioSocket %s...: no answer from the pump (%s); closing",
                               self.call_id[:8], exc)
        self._close()
        return 0.0

    # -- what the pump passes on (read by the server's one reader thread) ----------------------------
    def read_ready(self) -> bool:
        """Take in one of the pump's messages; False when the leg is over. One per call: the
        reader's selector reports the socket again while more are waiting, and a second read that
        finds nothing would cost a system call (and a turn of the interpreter lock) per message."""
        if self._events.closed:
            return False
        try:
            message = self._events_socket.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            message = b""
        if not message or message[:1] == b"E":   # Asterisk closed it, or the pump is gone
            self._close()
            return False
        kind, at = message[:1], ARRIVAL.unpack_from(message, 1)[0]
        if kind == b"A":
            if not self._take_in(message[1 + ARRIVAL.size:], at):
                self._command(b"X")
                self._close()
                return False
        elif kind == b"K":
            name = message[1 + ARRIVAL.size:].decode("utf-8", "replace")
            self._events.put(MediaEvent(MediaEventKind.MARK, mark=name, at=at))
        return True

    def _take_in(self, chunk: bytes, at: float) -> bool:
        """The frames in what Asterisk sent; False when the connection is over: the hang-up, an
        error frame or a broken frame."""
        buffer = self._inbound_bytes
        buffer += chunk
        try:
            while len(buffer) >= 3:
                kind, length = struct.unpack_from(">BH", buffer)
                if len(buffer) < 3 + length:
                    break
                payload = bytes(buffer[3:3 + length])
                del buffer[:3 + length]
                if not self._on_frame(kind, payload, at):
                    return False
        except AudioSocketError as exc:
            logger.info("[LIVE] AudioSocket %s...: %s; closing", self.call_id[:8], exc)
            return False
        return True

    def _on_frame(self, kind: int, payload: bytes, now: float) -> bool:
        """Handle one frame from Asterisk; False when the connection is over."""
        if kind in AUDIO_KINDS:
            self._on_audio(kind, payload, now)
        elif kind == KIND_DTMF:
            digit = payload[:1].decode("ascii", "replace")
            if digit in DTMF_DIGITS:
                self._events.put(MediaEvent(MediaEventKind.DTMF, digit=digit, at=now))
        elif kind in (KIND_HANGUP, KIND_ERROR):
            if kind == KIND_ERROR:
                logger.info("[LIVE] AudioSocket: Asterisk reported an error (%s) on %s...",
                            payload[:1].hex() or "no code", self.call_id[:8])
            return False
        else:
            logger.warning("[LIVE] AudioSocket: unexpected frame kind 0x%02x on %s...; closing", kind, self.call_id[:8])
            return False
        return True

    def _on_audio(self, kind: int, payload: bytes, now: float) -> None:
        if len(payload) > MAX_AUDIO_PAYLOAD or len(payload) % 2:
            raise AudioSocketError("malformed audio frame")
        if AUDIO_KINDS[kind] != self.sample_rate:
            if not self._warned_rate:
                self._warned_rate = True
                logger.warning("[LIVE] AudioSocket: audio at %d Hz on a %d Hz call %s...; ignored",
                               AUDIO_KINDS[kind], self.sample_rate, self.call_id[:8])
            return
        self._events.audio(payload, self.sample_rate, now)

    def _close(self) -> None:
        if not self._events.close():
            return
        # The pump sees its ends close and lets go of the call (and of Asterisk's connection).
        for sock in (self._events_socket, self._commands):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._reader.unwatch(self._events_socket, close=True)
        self._done.set()


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        self.server.owner.serve_connection(self.request, self.client_address)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: AudioSocketServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.owner.admit(client_address)


class AudioSocketServer:
    """The media server for ``[live] transport = audiosocket``: a thread per connection to take
    it in (its call id, the route's check; then idle until the call ends), and the pump process
    (:mod:`.media_pump`) that reads and paces them all."""

    def __init__(self, host: str, port: int, *, allow: tuple[Network, ...], accept: Callable[[MediaLeg], bool],
                 max_connections: int = 64, uuid_timeout: float = 5.0) -> None:
        self.accept = accept
        self.uuid_timeout = uuid_timeout
        self._gate = ConnectionGate(allow, max_connections, "AudioSocket")
        self.pump = PumpLink()
        self.reader = SocketWatcher("voiceassist-audiosocket-reader")
        self._server = _TCPServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self.pump.start()
        self.reader.start()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="voiceassist-audiosocket")
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.pump.stop()
        self.reader.stop()

    def admit(self, peer: Any) -> bool:
        """Checked on accept, before a byte is read: an allowed peer, and room for it."""
        host = str(peer[0])
        return self._gate.allowed(host) and self._gate.enter(host)

    def serve_connection(self, sock: socket.socket, peer: Any) -> None:
        try:
            self._serve(sock)
        finally:
            self._gate.leave()

    def _serve(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + self.uuid_timeout
        try:
            # The header first: anything but a 16-byte UUID frame is refused without reading on.
            kind, length = struct.unpack(">BH", _read_exactly(sock, 3, deadline))
            if kind != KIND_UUID or length != 16:
                logger.warning("[LIVE] AudioSocket connection refused: its first frame (kind 0x%02x, %d bytes) "
                               "is not a call id", kind, length)
                self._refuse(sock)
                return
            payload = _read_exactly(sock, 16, deadline)
        except AudioSocketError as exc:
            logger.warning("[LIVE] AudioSocket connection refused: no call id (%s)", exc)
            self._refuse(sock)
            return
        try:
            events, commands = self.pump.attach(sock, 8000)
        except OSError as exc:
            logger.error("[LIVE] AudioSocket: the pump cannot take the call (%s); refused", exc)
            self._refuse(sock)
            return
        leg = AudioSocketLeg(str(uuid.UUID(bytes=payload)), events, commands, self.reader)
        if self.accept(leg):
            leg.begin()
        else:
            leg.hang_up()
        leg.wait_closed()

    @staticmethod
    def _refuse(sock: socket.socket) -> None:
        try:
            sock.sendall(HANGUP_FRAME)
        except OSError:
            pass
