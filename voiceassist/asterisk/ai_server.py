"""voiceassist as the AI of another Asterisk connector: ``voiceassist ai-server`` speaks the
external-AI WebSocket protocol (see ``providers/ai_websocket.py`` for its messages) as a server.

A connector built for that protocol (an AudioSocket or ARI bridge that streams a call's μ-law to
"an AI server") connects, sends ``session.init`` and the caller's audio, and gets the real-time
conversation of ``[live]`` (the cascade, or the configured engine) back: ``session_started``,
the answer as ``audio_delta``, ``transcript`` after each exchange (the caller's words and what
they heard of the answer), ``user_speech_started`` when the caller talks over the answer (the
connector drops what it has buffered), ``response_complete`` when an answer has been sent, and
``error``. Each connection is a :class:`~voiceassist.call.media.MediaLeg` to the conversation,
so the turns are stored and the limits apply as for a call through Asterisk.

The connector's ``system_prompt`` is not used: this config's ``[llm] system_prompt`` and
knowledge file govern the assistant. Audio is sent at the pace it plays with a small lead (the
conversation must know what the caller has heard when they interrupt). Binds 127.0.0.1 by
default; anywhere else needs ``[ai_server] token`` (checked in constant time before the
handshake completes), and peers outside ``[ai_server] allow`` are refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
import time
import uuid
from typing import Any

from ..audio.conversion import UlawEncoder, ulaw_to_pcm
from ..call.assistant import Assistant
from ..call.engine_conversation import EngineConversation, engine_for
from ..call.media import FRAME_SECONDS, MediaEvent, MediaEventKind, frame_bytes
from ..call.realtime import NO_FRAMES_GAP_SECONDS, LiveConversation, LiveOutcome
from ..config import AIServer
from ..errors import ConfigError
from ..providers.engine_session import SEND_TIMEOUT, set_send_timeout
from ..logs import logger
from ..types import CallInfo, TurnRecord
from .access import is_allowed, is_loopback_host, parse_allow
from .legs import CallerEvents, Playout

RATE = 8000
# Audio handed to the connector ahead of what the caller hears (see websocket_media.LEAD_SECONDS).
LEAD_SECONDS = 0.2
SEND_INTERVAL = 0.06
# Seconds a connector has to send session.init once connected.
INIT_TIMEOUT = 5.0
MAX_MESSAGE_BYTES = 1 << 20
# Seconds of caller audio in one audio.input message at most (the protocol streams small pieces).
MAX_AUDIO_SECONDS = 2.0
# Characters of one text.input at most (a typed question, not a document).
MAX_TEXT_CHARS = 1000


class ProtocolLeg:
    """One connector's session as a :class:`~voiceassist.call.media.MediaLeg`."""

    def __init__(self, connection: Any, call_id: str) -> None:
        self.connection = connection
        self.call_id = call_id
        self.sample_rate = RATE
        self._events = CallerEvents()
        self._playout = Playout(RATE)
        self._encoder = UlawEncoder(RATE)
        self._lock = threading.Lock()
        self._sent_until = 0.0
        self._marks: list[tuple[str, float]] = []   # (name, when its audio has played)
        self._speaking = False                     # audio sent since the last response_complete
        self._inbound = bytearray()                # caller audio not yet a whole frame
        self._caller_until = 0.0                   # the end of the caller's audio on our clock
        self._last_piece_at = 0.0
        self._last_piece_seconds = 0.0
        self._wake = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name=f"voiceassist-ai-{call_id[:8]}")

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
            ahead = max(0.0, self._sent_until - time.monotonic())
            self._sent_until = 0.0
            self._marks.clear()
            heard = max(0.0, self._playout.clear() - ahead)
            if self._speaking:
                self._speaking = False
                self.send({"type": "user_speech_started"})  # the connector drops what it buffered
            return heard

    def queued_seconds(self) -> float:
        return self._playout.queued_seconds() + max(0.0, self._sent_until - time.monotonic())

    def audio_waiting(self) -> bool:
        # A connector sends the caller's audio in pieces (20 ms to 2 s): until the next piece is
        # due, no frame for a while is no quiet line.
        return time.monotonic() - self._last_piece_at < self._last_piece_seconds + NO_FRAMES_GAP_SECONDS

    def hang_up(self) -> None:
        self._close()

    # -- to the connector ------------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        try:
            self.connection.send(json.dumps(message))
        except Exception as exc:  # gone, or not reading for SEND_TIMEOUT: the session ends
            logger.info("[AI-SERVER] %s... send failed (%s): the session ends", self.call_id[:8], exc)
            threading.Thread(target=self._close, daemon=True).start()

    def _send_loop(self) -> None:
        while not self._events.closed:
            self._wake.wait(SEND_INTERVAL)
            self._wake.clear()
            self._top_up()

    def _top_up(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._sent_until < now:
                self._sent_until = now
            frames: list[bytes] = []
            while self._sent_until + len(frames) * FRAME_SECONDS < now + LEAD_SECONDS:
                marks, pcm = self._playout.take()
                due = self._sent_until + len(frames) * FRAME_SECONDS
                self._marks += [(name, due) for name in marks]
                if pcm is None:
                    break
                frames.append(pcm)
            if frames:
                audio = self._encoder.encode(b"".join(frames))
                self.send({"type": "audio_delta", "audio": base64.b64encode(audio).decode("ascii")})
                self._sent_until += len(frames) * FRAME_SECONDS
                self._speaking = True
            played = [name for name, due in self._marks if due <= now]
            self._marks = [(name, due) for name, due in self._marks if due > now]
            if played and self._speaking:
                # The conversation marks the end of each answer and prompt: it has been played.
                self._speaking = False
                self.send({"type": "response_complete"})
        for name in played:
            self._events.put(MediaEvent(MediaEventKind.MARK, mark=name, at=now))

    # -- from the connector (the connection's own thread) ------------------------------------------------
    def read_until_closed(self) -> None:
        try:
            for message in self.connection:
                self._on_message(message, time.monotonic())
        except Exception as exc:  # ConnectionClosed, or a broken peer
            logger.debug("[AI-SERVER] %s... closed: %s", self.call_id[:8], exc)
        finally:
            self._close()

    def _on_message(self, raw: str | bytes, now: float) -> None:
        message = _message(raw) or {}
        kind = message.get("type")
        if kind == "audio.input":
            audio = _audio(message)
            if audio is None:
                self.error("audio.input needs base64 g711_ulaw audio of at most 2 s")
                return
            self._caller_audio(ulaw_to_pcm(audio, RATE, RATE), now)
        elif kind == "text.input":
            text = _text(message)
            if text is None:
                self.error(f"text.input needs text of 1 to {MAX_TEXT_CHARS} characters")
                return
            self._events.put(MediaEvent(MediaEventKind.TEXT, text=text, at=now))
        elif kind == "session.init":
            self.error("the session has already started")
        else:
            self.error("not a message of this protocol: expected audio.input")

    def _caller_audio(self, pcm: bytes, now: float) -> None:
        """A piece of the caller's audio as 20 ms frames on one timeline: a piece holds what was
        said before it was sent, so its frames are stamped back from now (never before the
        previous piece's end), not all at once."""
        size = frame_bytes(RATE)
        self._inbound += pcm
        frames = [bytes(self._inbound[i:i + size]) for i in range(0, len(self._inbound) - size + 1, size)]
        del self._inbound[:len(frames) * size]
        start = max(self._caller_until, now - len(frames) * FRAME_SECONDS)
        for index, frame in enumerate(frames):
            self._events.put(MediaEvent(MediaEventKind.AUDIO, audio=frame, at=start + (index + 1) * FRAME_SECONDS))
        self._caller_until = start + len(frames) * FRAME_SECONDS
        self._last_piece_at, self._last_piece_seconds = now, len(pcm) / 2 / RATE

    def error(self, text: str, *, fatal: bool = False) -> None:
        self.send({"type": "error", "message": text, "fatal": fatal})

    def _close(self) -> None:
        if not self._events.close():
            return
        self._wake.set()
        try:
            self.connection.close()
        except Exception:
            pass


def _message(raw: str | bytes) -> dict[str, Any] | None:
    if not isinstance(raw, str):
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _text(message: dict[str, Any]) -> str | None:
    """A text.input's words, control characters made spaces (they go to a model and the
    database), or None when there are none or too many."""
    data = message.get("text")
    if not isinstance(data, str) or len(data) > MAX_TEXT_CHARS:
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in data).split())
    return text or None


def _audio(message: dict[str, Any]) -> bytes | None:
    data = message.get("audio")
    if not isinstance(data, str) or len(data) > MAX_AUDIO_SECONDS * RATE * 4 / 3 + 4:
        return None
    if message.get("format", "g711_ulaw") not in ("g711_ulaw", "ulaw", "mulaw", "pcmu"):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


class AIProtocolServer:
    """The listener: one conversation per connection, at most ``max_sessions`` at once."""

    def __init__(self, assistant: Assistant, settings: AIServer, host: str | None = None,
                 port: int | None = None) -> None:
        self.assistant = assistant
        self.settings = settings
        self.host = host or settings.host
        self.port = settings.port if port is None else port
        if not is_loopback_host(self.host) and not settings.token:
            raise ConfigError(f"[ai_server] host = {self.host} is reachable from other machines: set [ai_server] token "
                              "(connectors send it as 'Authorization: Bearer <token>')")
        self.allowed = parse_allow(", ".join(settings.allow))
        self.engine = engine_for(assistant)
        self._slots = threading.BoundedSemaphore(settings.max_sessions)
        self._server: Any = None

    def start(self) -> None:
        from websockets.sync.server import serve

        self._server = serve(self._handle, self.host, self.port, process_request=self._authorize,
                             max_size=MAX_MESSAGE_BYTES, compression=None)
        self.port = int(self._server.socket.getsockname()[1])
        threading.Thread(target=self._server.serve_forever, daemon=True, name="voiceassist-ai-server").start()
        logger.info("[AI-SERVER] listening on %s:%d", self.host, self.port)

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _authorize(self, connection: Any, request: Any) -> Any:
        peer = connection.remote_address[0] if connection.remote_address else ""
        if not is_allowed(peer, self.allowed):
            logger.warning("[AI-SERVER] connection from %s refused: not in [ai_server] allow", peer)
            return connection.respond(403, "Forbidden\n")
        if self.settings.token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.settings.token}".encode()):
                logger.warning("[AI-SERVER] connection from %s refused: missing or wrong token", peer)
                return connection.respond(401, "Unauthorized\n")
        return None

    def _handle(self, connection: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._send(connection, {"type": "error", "message": "all assistants are busy", "fatal": True})
            connection.close()
            return
        try:
            self._session(connection)
        finally:
            self._slots.release()

    def _session(self, connection: Any) -> None:
        try:
            init = _message(connection.recv(timeout=INIT_TIMEOUT))
        except Exception:
            init = None
        problem = _init_problem(init)
        if problem:
            self._send(connection, {"type": "error", "message": problem, "fatal": True})
            connection.close()
            return
        # A connector that stops reading must not hold the session's threads (see ai_websocket).
        set_send_timeout(connection.socket, SEND_TIMEOUT)
        call_id = uuid.uuid4().hex
        call = CallInfo(uniqueid=f"ai-{call_id[:20]}", channel="ai-server", caller_number="", caller_name="")
        self._send(connection, {"type": "session_started", "session_id": call_id})
        leg = ProtocolLeg(connection, call_id)
        leg.start()
        conversation: LiveConversation | EngineConversation
        prompts = _prompts()
        if self.engine is not None:
            conversation = EngineConversation(leg, self.assistant, call, prompts, self.engine, on_turn=_transcripts(leg))
        else:
            conversation = LiveConversation(leg, self.assistant, call, prompts, on_turn=_transcripts(leg))
        outcome: list[LiveOutcome] = []
        thread = threading.Thread(target=lambda: outcome.append(conversation.run()), daemon=True,
                                  name=f"voiceassist-ai-{call_id[:8]}")
        thread.start()
        leg.read_until_closed()
        thread.join(30)
        try:
            self.assistant.journal().end_call(call, f"ai-{outcome[0].reason.value if outcome else 'error'}")
        except Exception as exc:  # StorageError or a driver error: logged, the session is over anyway
            logger.error("[DB] %s session end NOT stored: %s", call.uniqueid, exc)

    @staticmethod
    def _send(connection: Any, message: dict[str, Any]) -> None:
        try:
            connection.send(json.dumps(message))
        except Exception:
            pass


def _init_problem(init: dict[str, Any] | None) -> str:
    """Why a first message is not a usable session.init (empty: it is)."""
    if init is None or init.get("type") != "session.init":
        return "the first message must be session.init"
    config: dict[str, Any] = init["config"] if isinstance(init.get("config"), dict) else {}
    if config.get("audio_format", "g711_ulaw") != "g711_ulaw" or config.get("sample_rate", RATE) != RATE \
            or config.get("channels", 1) != 1:
        return "this server speaks g711_ulaw at 8000 Hz, mono"
    return ""


def _transcripts(leg: ProtocolLeg) -> Any:
    def told(record: TurnRecord) -> None:
        if record.transcript:
            leg.send({"type": "transcript", "role": "user", "text": record.transcript})
        said = record.heard_reply if record.interrupted else record.reply
        if said:
            leg.send({"type": "transcript", "role": "assistant", "text": said})
    return told


def _prompts() -> Any:
    from ..audio.prompts import PromptSounds
    from ..system.shipped import shipped_path

    shipped = shipped_path("sounds")
    return PromptSounds([shipped] if shipped else [])
