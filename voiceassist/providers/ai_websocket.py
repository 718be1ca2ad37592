"""A conversation engine on the PBX owner's own AI server, over the external-AI WebSocket protocol.

The protocol (JSON text messages; audio is base64 G.711 μ-law at 8 kHz, mono):

* we send ``session.init`` with ``config`` {``audio_format``: ``g711_ulaw``, ``sample_rate``,
  ``channels``, ``language``, ``voice``, ``system_prompt``, ``vad_enabled``, ``vad_threshold``,
  ``vad_silence_duration_ms``}, then ``audio.input`` {``audio``, ``format``} as the caller speaks,
  and ``text.input`` {``text``} for what the caller did not say (a key they pressed);
* the server answers ``session_started`` (or ``ready``), then sends its speech as ``audio_delta``
  {``audio``} (or ``audio_chunk`` {``data``}), what was said as ``transcript`` {``text``, ``role``}
  (or ``transcription`` {``text``, ``speaker``}), ``user_speech_started`` (or ``speech_started``)
  when the caller starts talking over it, ``response_complete`` (or ``audio_done``) at the end of
  an answer, and ``error`` {``message``, ``fatal``}.

Both spellings of every server message are accepted. Anything else from the server (unknown
types, bad JSON, audio that is not base64) is logged and skipped, never trusted: the server is
another program, possibly on another machine.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import setting
from ..errors import ConfigError, ProviderAuthError, ProviderError, ProviderTimeout, ProviderUnavailable
from ..logs import logger
from ..types import EngineEvent, EngineEventKind, Exchange, ToolSpec
from .base import Provider
from .engine_session import (MAX_TEXT_CHARS, SEND_TIMEOUT, EngineSessionBase, EngineSettings, set_send_timeout,
                             with_history)

NAME = "ai_websocket"
# A server message larger than this is refused (an answer's audio comes in many small messages).
MAX_MESSAGE_BYTES = 1 << 20

_AUDIO = {"audio_delta": "audio", "audio_chunk": "data"}
_TRANSCRIPT = {"transcript": "role", "transcription": "speaker"}
_SPEECH_STARTED = ("user_speech_started", "speech_started")
_DONE = ("response_complete", "audio_done")
_READY = ("session_started", "ready")
_ASSISTANT_ROLES = ("assistant", "agent", "ai", "bot", "model")


@dataclass(frozen=True)
class AIWebSocketSettings(EngineSettings):
    """``[ai_websocket]``: where the AI server is and what the session asks of it."""

    # ws://host:port/path or wss://… (wss for anything not on this machine).
    url: str = setting("", pattern=r"(wss?://[^\s]+)?")
    # Sent as "Authorization: Bearer <token>" (empty: none).
    token: str = setting("", secret=True)
    voice: str = ""
    language: str = ""            # empty: [general] language
    vad_enabled: bool = True      # the server finds where the caller stops
    vad_threshold: float = setting(0.5, minimum=0, maximum=1)


class AIWebSocketEngine(Provider[AIWebSocketSettings]):
    """Opens one :class:`AIWebSocketSession` per call."""

    name = NAME
    Settings = AIWebSocketSettings

    def setup(self) -> None:
        if not self.settings.url:
            raise ConfigError(f"[{NAME}] url is empty: the AI server's address, e.g. ws://127.0.0.1:8765/ws")
        host = (urllib.parse.urlsplit(self.settings.url).hostname or "").strip("[]")
        if self.settings.token and self.settings.url.startswith("ws://") and not _loopback(host):
            raise ConfigError(f"[{NAME}] url is ws:// to {host}: the token and the caller's audio would cross the "
                              "network unencrypted; use wss:// (or a server on this machine)")

    def open(self, instructions: str, history: list[Exchange], tools: Sequence[ToolSpec] = ()) -> AIWebSocketSession:
        """Connect, start a session with ``instructions`` (the system prompt, knowledge and what is
        known of the caller; earlier exchanges of this call are appended for servers that keep no
        history of their own), and wait for the server to say it started. Raises
        ``ProviderUnavailable`` (refused, 5xx, closed), ``ProviderTimeout`` or ``ProviderAuthError``.
        The protocol has no tools: ``tools`` are not offered (the server acts on its own)."""
        session = AIWebSocketSession(self.settings, self.language)
        session.start(with_history(instructions, history))
        return session


class AIWebSocketSession(EngineSessionBase):
    """One call's session: :meth:`send_audio` from the conversation's thread, events through
    :meth:`next_event` (read by a thread of its own)."""

    def __init__(self, settings: AIWebSocketSettings, language: str) -> None:
        super().__init__(NAME)
        self.settings = settings
        self.language = language
        self._connection: Any = None
        self._send_lock = threading.Lock()

    def start(self, system_prompt: str) -> None:
        from websockets import exceptions  # a dependency of voiceassist itself (the media server)
        from websockets.sync import client
        headers = {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else None
        timeout = self.settings.connect_timeout
        try:
            # websockets 17 connects on __enter__ (connect() alone is deprecated); before 17,
            # connect() returns the open connection, whose __enter__ returns itself.
            self._connection = client.connect(self.settings.url, open_timeout=timeout, close_timeout=1.0,
                                              additional_headers=headers, max_size=MAX_MESSAGE_BYTES,
                                              compression=None).__enter__()
        except exceptions.InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ProviderAuthError(f"{NAME}: the server refused the token (HTTP {status})",
                                        provider=NAME) from None
            raise ProviderUnavailable(f"{NAME}: the server answered HTTP {status}", provider=NAME) from None
        except TimeoutError:
            raise ProviderTimeout(f"{NAME}: no connection within {timeout:.1f} s", provider=NAME) from None
        except (OSError, exceptions.WebSocketException) as exc:
            raise ProviderUnavailable(f"{NAME}: cannot connect to {self.settings.url}: {exc}", provider=NAME) from None
        set_send_timeout(self._connection.socket, SEND_TIMEOUT)
        try:
            self._send({"type": "session.init", "config": {
                "audio_format": "g711_ulaw", "sample_rate": 8000, "channels": 1,
                "language": self.settings.language or self.language, "voice": self.settings.voice,
                "system_prompt": system_prompt, "vad_enabled": self.settings.vad_enabled,
                "vad_threshold": self.settings.vad_threshold,
                "vad_silence_duration_ms": self.settings.vad_silence_duration_ms}})
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise
        self.start_reading()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while True:
                message = _parse(self._connection.recv(timeout=max(0.0, deadline - time.monotonic())), self._skip)
                if message is None:
                    continue
                kind = message.get("type")
                if kind in _READY:
                    return
                if kind == "error":
                    raise ProviderUnavailable(f"{NAME}: {_text(message.get('message'))}", provider=NAME)
        except TimeoutError:
            raise ProviderTimeout(f"{NAME}: the session did not start within {timeout:.1f} s",
                                  provider=NAME) from None
        except ProviderError:
            raise
        except Exception as exc:  # closed during the handshake
            raise ProviderUnavailable(f"{NAME}: the server closed the session: {exc}", provider=NAME) from None

    # -- to the server -------------------------------------------------------------------------------
    def send_audio(self, mulaw: bytes) -> None:
        """The caller's audio (8 kHz μ-law). A connection that is gone raises ProviderUnavailable."""
        self._send({"type": "audio.input", "audio": base64.b64encode(mulaw).decode("ascii"), "format": "g711_ulaw"})

    def send_text(self, text: str) -> None:
        self._send({"type": "text.input", "text": text})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            with self._send_lock:
                self._connection.send(json.dumps(message))
        except Exception as exc:
            raise ProviderUnavailable(f"{NAME}: the connection is gone: {exc}", provider=NAME) from None

    # -- from the server -----------------------------------------------------------------------------
    def _receive(self) -> Iterator[EngineEvent | None]:
        for raw in self._connection:
            yield _event(_parse(raw, self._skip), self._skip)

    def close(self) -> None:
        super().close()
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # already gone
                pass


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_skip(why: str) -> None:
    logger.warning("[ENGINE] %s sent %s: skipped", NAME, why)


def _parse(raw: str | bytes, skip: Callable[[str], None] = _log_skip) -> dict[str, Any] | None:
    """One server message, or None (``skip`` is told why) when it is not a JSON object."""
    if isinstance(raw, bytes):
        skip("a binary message (the protocol is JSON text)")
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        skip("a message that is not JSON")
        return None
    if not isinstance(message, dict):
        skip("a JSON message that is not an object")
        return None
    return message


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _event(message: dict[str, Any] | None, skip: Callable[[str], None] = _log_skip) -> EngineEvent | None:
    """A server message as an engine event (None: nothing the conversation needs)."""
    if message is None:
        return None
    kind = message.get("type")
    if kind in _AUDIO:
        data = message.get(_AUDIO[kind])
        try:
            audio = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
        except (binascii.Error, ValueError):
            audio = b""
        if not audio:
            skip(f"{kind} without base64 audio")
            return None
        return EngineEvent(EngineEventKind.AUDIO, audio=audio)
    if kind in _TRANSCRIPT:
        text = _text(message.get("text")).strip()[:MAX_TEXT_CHARS]
        if not text:
            return None
        role = _text(message.get(_TRANSCRIPT[kind])).lower()
        return EngineEvent(EngineEventKind.ASSISTANT_SAID if role in _ASSISTANT_ROLES else EngineEventKind.CALLER_SAID,
                           text=text)
    if kind in _SPEECH_STARTED:
        return EngineEvent(EngineEventKind.SPEECH_STARTED)
    if kind in _DONE:
        return EngineEvent(EngineEventKind.DONE)
    if kind == "error":
        fatal = message.get("fatal") is True
        return EngineEvent(EngineEventKind.ERROR, text=_text(message.get("message"))[:300] or "error", fatal=fatal)
    if kind not in _READY:
        skip(f"an unknown message type {str(kind)[:40]!r}")
    return None
