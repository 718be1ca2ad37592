"""Asterisk's WebSocket channel (``chan_websocket``): the call's audio over a WebSocket.

The route dials ``WebSocket/<websocket_client.conf section>/c(slin|slin16)f(json)v(call=<id>)``;
Asterisk connects to the ``uri`` of that section (ours: ``ws://host:port/media``), sends
``MEDIA_START`` (JSON: the format, the frame size and the channel's variables), then the caller's
audio as BINARY messages and events (``DTMF_END``, ``MEDIA_MARK_PROCESSED``) as TEXT messages.

Which call a connection belongs to: the route sets ``__VA_MEDIA_ID`` on the caller's channel
before it dials, Asterisk copies it to the WebSocket channel, and ``MEDIA_START`` carries it.
The ``v(call=...)`` query parameter is only a fallback: Asterisk keeps ``v()`` on the shared
``websocket_client`` object, so two calls dialling at the same moment may see each other's.

Asterisk re-times what we send (one frame per 20 ms from its queue), so we keep a small lead
(:data:`LEAD_SECONDS`) rather than pacing frame by frame, send whole frames only (Asterisk drops a
partial one), mark the queue with ``MARK_MEDIA`` so a mark fires when the audio before it has
been handed to the call, and on barge-in send ``FLUSH_MEDIA``, which drops Asterisk's queue too.

Only peers in ``[live] allow`` get a handshake, only on ``/media``, only with the
``websocket_client.conf`` password when one is set (HTTP Basic, user ``voiceassist``), and only an
announced id gets into a call (see :mod:`.live`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..call.media import FRAME_SECONDS, MediaEvent, MediaEventKind, MediaLeg, frame_bytes
from ..logs import logger
from .access import ConnectionGate, Network
from .dialplan import MEDIA_ID
from .legs import CallerEvents, Playout

# Audio handed to Asterisk ahead of what the caller hears: enough to ride out a late wake-up of
# the sender, small enough that a barge-in's FLUSH_MEDIA has little to drop.
LEAD_SECONDS = 0.2
# How often the sender tops the lead up.
SEND_INTERVAL = 0.06
# Seconds Asterisk has to send MEDIA_START once connected.
START_TIMEOUT = 5.0
FORMAT_RATES = {"slin": 8000, "slin16": 16000}
USER = "voiceassist"
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class WebSocketLeg:
    """One call's WebSocket connection as a :class:`~voiceassist.call.media.MediaLeg`."""

    def __init__(self, connection: Any, call_id: str, sample_rate: int) -> None:
        self.connection = connection
        self.call_id = call_id
        self.sample_rate = sample_rate
        self._events = CallerEvents()
        self._playout = Playout(sample_rate)
        self._lock = threading.Lock()          # one sender at a time, and flush after a send
        self._sent_until = 0.0                 # when Asterisk will have played what we sent
        self._marks: dict[str, str] = {}       # our short correlation id -> the conversation's name
        self._mark_count = 0
        self._wake = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name=f"voiceassist-ws-{call_id[:8]}")

    def start(self) -> None:
        self._sender.start()

    # -- MediaLeg ------------------------------------------------------------------------------------
    def next_event(self, timeout: float) -> MediaEvent | None:
        return self._events.next(timeout)

    def play(self, pcm: bytes) -> None:
        self._playout.add(pcm)
        self._wake.set()

    def mark(self, name: str) -> None:
        self._playout.add_mark(name)
        self._wake.set()

    def stop_playing(self) -> float:
        with self._lock:
            self._command({"command": "FLUSH_MEDIA"})
            self._marks.clear()             # Asterisk never reports marks it flushed
            ahead = max(0.0, self._sent_until - time.monotonic())
            self._sent_until = 0.0
            return max(0.0, self._playout.clear() - ahead)

    def queued_seconds(self) -> float:
        return self._playout.queued_seconds() + max(0.0, self._sent_until - time.monotonic())

    def audio_waiting(self) -> bool:
        return False  # the WebSocket library reads on its own thread: nothing cheap to ask

    def hang_up(self) -> None:
        if self._events.closed:
            return
        self._command({"command": "HANGUP"})
        self._close()

    # -- sending -------------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._events.closed:
            self._wake.wait(SEND_INTERVAL)
            self._wake.clear()
            try:
                self._top_up()
            except Exception as exc:  # the connection went: the reader reports it
                logger.debug("[LIVE] WebSocket send failed: %s", exc)
                return

    def _top_up(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._sent_until < now:
                self._sent_until = now
            frames: list[bytes] = []
            while self._sent_until + len(frames) * FRAME_SECONDS < now + LEAD_SECONDS:
                marks, pcm = self._playout.take()
                if marks:
                    self._flush(frames)
                    frames = []
                    for name in marks:
                        self._mark(name)
                if pcm is None:
                    break
                frames.append(pcm)
            self._flush(frames)

    def _flush(self, frames: list[bytes]) -> None:
        if frames:
            self.connection.send(b"".join(frames))
            self._sent_until = max(self._sent_until, time.monotonic()) + len(frames) * FRAME_SECONDS

    def _mark(self, name: str) -> None:
        # A TEXT command longer than 128 bytes is dropped by Asterisk: our ids are short.
        self._mark_count += 1
        short = f"m{self._mark_count}"
        self._marks[short] = name
        self._command({"command": "MARK_MEDIA", "correlation_id": short})

    def _command(self, command: dict[str, str]) -> None:
        try:
            self.connection.send(json.dumps(command, separators=(",", ":")))
        except Exception as exc:
            logger.debug("[LIVE] WebSocket command %s not sent: %s", command.get("command"), exc)

    # -- receiving (the connection's own thread) -----------------------------------------------------
    def read_until_closed(self) -> None:
        try:
            for message in self.connection:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self._events.audio(message, self.sample_rate, now)
                else:
                    self._on_text(message, now)
        except Exception as exc:  # ConnectionClosed, or a broken peer
            logger.debug("[LIVE] WebSocket %s... closed: %s", self.call_id[:8], exc)
        finally:
            self._close()

    def _on_text(self, text: str, now: float) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("event")
        if kind == "DTMF_END" and str(event.get("digit", "")) in DTMF_DIGITS:
            self._events.put(MediaEvent(MediaEventKind.DTMF, digit=str(event["digit"]), at=now))
        elif kind == "MEDIA_MARK_PROCESSED":
            with self._lock:
                name = self._marks.pop(str(event.get("correlation_id", "")), None)
            if name is not None:
                self._events.put(MediaEvent(MediaEventKind.MARK, mark=name, at=now))
        elif kind == "ERROR":
            logger.warning("[LIVE] WebSocket %s...: Asterisk says %s", self.call_id[:8],
                           str(event.get("error_text", ""))[:200])

    def _close(self) -> None:
        if not self._events.close():
            return
        self._wake.set()
        try:
            self.connection.close()
        except Exception:
            pass


def media_start(text: Any) -> tuple[str, int, dict[str, str]]:
    """The query-independent facts of a ``MEDIA_START`` message: its format, rate and variables.

    Raises:
        ValueError: not a JSON ``MEDIA_START`` in a format we asked for.
    """
    if not isinstance(text, str) or len(text) > 65536:
        raise ValueError("the first message is not MEDIA_START")
    event = json.loads(text)
    if not isinstance(event, dict) or event.get("event") != "MEDIA_START":
        raise ValueError("the first message is not MEDIA_START")
    fmt = str(event.get("format", ""))
    if fmt not in FORMAT_RATES:
        raise ValueError(f"format {fmt[:20]!r} is not slin or slin16")
    variables = event.get("channel_variables")
    variables = {str(k): str(v) for k, v in variables.items()} if isinstance(variables, dict) else {}
    return fmt, FORMAT_RATES[fmt], variables


class WebSocketMediaServer:
    """The media server for ``[live] transport = websocket``: Asterisk's WebSocket channel
    connects here (a thread per connection from the ``websockets`` library, a sender per leg)."""

    def __init__(self, host: str, port: int, *, allow: tuple[Network, ...], accept: Callable[[MediaLeg], bool],
                 max_connections: int = 64, password: str = "") -> None:
        from websockets.sync.server import serve

        self.accept = accept
        self.password = password
        self._gate = ConnectionGate(allow, max_connections, "WebSocket")
        self._server = serve(self._handle, host, port, process_request=self._check_request, compression=None,
                             max_size=2 ** 16, open_timeout=START_TIMEOUT, server_header=None)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.socket.getsockname()[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="voiceassist-websocket")
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()

    def _check_request(self, connection: Any, request: Any) -> Any:
        """Before the handshake: the peer, the path, the password, and room for one more."""
        host = str(connection.remote_address[0])
        if not self._gate.allowed(host):
            return connection.respond(403, "Forbidden\n")
        if urlsplit(request.path).path != "/media":
            self._gate.refuse(host, "WebSocket path is not /media")
            return connection.respond(404, "Not Found\n")
        if self.password and not self._authorised(request.headers.get("Authorization", "")):
            self._gate.refuse(host, "wrong or missing WebSocket password")
            return connection.respond(401, "Unauthorized\n")
        if not self._gate.enter(host):
            return connection.respond(503, "Busy\n")
        return None

    def _authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{USER}:{self.password}".encode()
        return hmac.compare_digest(f"{user}:{password}".encode(), expected)

    def _handle(self, connection: Any) -> None:
        try:
            self._serve(connection)
        finally:
            self._gate.leave()

    def _serve(self, connection: Any) -> None:
        try:
            fmt, rate, variables = media_start(connection.recv(timeout=START_TIMEOUT))
        except Exception as exc:  # TimeoutError, ConnectionClosed, ValueError
            logger.warning("[LIVE] WebSocket media connection refused: %s", str(exc)[:200])
            connection.close()
            return
        query = parse_qs(urlsplit(connection.request.path).query)
        call_id = variables.get("__" + MEDIA_ID) or variables.get(MEDIA_ID) or (query.get("call") or [""])[0]
        leg = WebSocketLeg(connection, call_id, rate)
        if not self.accept(leg):
            leg.hang_up()
            return
        logger.debug("[LIVE] WebSocket %s... %s, %s bytes a frame", call_id[:8], fmt, frame_bytes(rate))
        leg.start()
        leg.read_until_closed()
