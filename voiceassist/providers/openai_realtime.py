"""Text-to-speech with OpenAI's Realtime API (``gpt-realtime-2.1-mini``): the successor OpenAI
names for ``/v1/audio/speech``, whose tts-1, tts-1-hd and gpt-4o-mini-tts shut down on 2027-01-06.

The Realtime models are conversational, so the session is told to read the text aloud rather
than answer it. Audio comes back as G.711 μ-law (``audio/pcmu``, 8 kHz): what Asterisk plays,
with no conversion. Uses the SDK's synchronous WebSocket client (``openai[realtime]``).
"""

from __future__ import annotations

import base64
import importlib.util
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..config import seconds, setting
from ..errors import ProviderBadResponse, ProviderError, ProviderNotInstalled, ProviderTimeout
from ..types import SpeechAudio
from .base import call_sdk, synthesize_in_parts
from .engine_session import EngineSettings
from .openai_client import OpenAIConnection, OpenAIProvider
from .sdk_errors import from_http_status

NAME = "openai_realtime"
MAX_INPUT_CHARS = 4096
_ERROR_STATUS = {"rate_limit_exceeded": 429, "invalid_api_key": 401, "authentication_error": 401,
                 "server_error": 500, "insufficient_quota": 429}


@dataclass(frozen=True)
class OpenAIRealtimeSettings(OpenAIConnection, EngineSettings):
    """``[openai_realtime]``: OpenAI's Realtime API, as text-to-speech (``[tts] provider``) and as
    the real-time calls' conversation engine (``[live] engine``)."""

    timeout: float = seconds(10.0)
    model: str = "gpt-realtime-2.1-mini"
    voice: str = "marin"
    # Text-to-speech only: the model is told to read the text, not to answer it.
    instructions: str = ("Read the user's message aloud exactly as written, word for word, in a warm and "
                         "clear voice. Do not answer it, add to it or comment on it.")
    # -- the conversation engine (and EngineSettings' greet, connect_timeout, response_timeout, ...) --
    # Where the caller stops: server_vad (silence of vad_silence_duration_ms), semantic_vad (the
    # model judges whether the caller finished; eagerness sets how soon it answers), or local
    # (voiceassist's own voice detector: it commits the question and stops an answer talked over).
    turn_detection: str = setting("server_vad", choices=("server_vad", "semantic_vad", "local"))
    vad_threshold: float = setting(0.5, minimum=0, maximum=1)
    vad_prefix_padding_ms: int = setting(300, minimum=0, maximum=2000)
    eagerness: str = setting("auto", choices=("auto", "low", "medium", "high"))
    # The model that writes down what the caller said (stored with each turn; empty: not stored).
    transcription_model: str = "gpt-4o-mini-transcribe"


class OpenAIRealtimeTextToSpeech(OpenAIProvider[OpenAIRealtimeSettings]):
    """One WebSocket session per synthesis: session.update, a user message, response.create,
    then ``response.output_audio.delta`` events until ``response.done``."""

    name = NAME
    Settings = OpenAIRealtimeSettings

    def setup(self) -> None:
        require_websockets(NAME)
        super().setup()

    def synthesize(self, text: str) -> SpeechAudio:
        return synthesize_in_parts(NAME, text, MAX_INPUT_CHARS, self._synthesize_one)

    def _synthesize_one(self, text: str) -> SpeechAudio:
        audio = call_sdk(NAME, lambda seconds: self._session(text, seconds), timeout=self.settings.timeout,
                         retries=self.settings.retries, hint=self.hint)
        return SpeechAudio(data=audio, encoding="mulaw", sample_rate=8000)

    def _session(self, text: str, timeout: float) -> bytes:
        chunks: list[bytes] = []
        manager = self._client.realtime.connect(
            model=self.settings.model, max_retries=0,
            websocket_connection_options={"open_timeout": timeout, "close_timeout": 1.0})
        with manager as connection, closed_after(timeout, connection.close) as expired:
            try:
                connection.session.update(session={
                    "type": "realtime", "output_modalities": ["audio"], "instructions": self.settings.instructions,
                    "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": self.settings.voice}},
                })
                connection.conversation.item.create(item={
                    "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
                connection.response.create()
                for event in connection:
                    if event.type == "response.output_audio.delta":
                        chunks.append(base64.b64decode(event.delta))
                    elif event.type == "error":
                        raise event_error(getattr(event, "error", None), self.hint)
                    elif event.type == "response.done":
                        response = event.response
                        if response.status != "completed":
                            details = getattr(response, "status_details", None)
                            raise event_error(getattr(details, "error", None), self.hint,
                                               f"response {response.status}")
                        break
                else:
                    if expired.is_set():
                        raise ProviderTimeout(f"{NAME}: no complete answer within {timeout:.1f} s", provider=NAME)
                    raise ProviderBadResponse(f"{NAME}: the connection closed before response.done", provider=NAME)
            except Exception:
                if expired.is_set():
                    raise ProviderTimeout(f"{NAME}: no complete answer within {timeout:.1f} s", provider=NAME) from None
                raise
        audio = b"".join(chunks)
        if not audio:
            raise ProviderBadResponse(f"{NAME}: the response held no audio", provider=NAME)
        return audio


@contextmanager
def closed_after(seconds: float, close: Callable[[], None]) -> Iterator[threading.Event]:
    """The SDK's Realtime ``recv()`` has no timeout: ``close`` (the connection's) is called if the
    block has not ended within ``seconds``, which ends the wait; the event says whether it was."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        close()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


def require_websockets(provider: str) -> None:
    """The SDK's Realtime client needs ``websockets``, which the SDK does not require itself."""
    if importlib.util.find_spec("websockets") is None:
        raise ProviderNotInstalled("websockets is not installed: pip install 'voiceassist[openai]'", provider=provider)


def event_error(error: Any, hint: str, default: str = "error event") -> ProviderError:
    """A Realtime ``error`` event (or a failed response's error) as one of our errors."""
    kind = str(getattr(error, "code", None) or getattr(error, "type", None) or default)
    message = f"{kind}: {getattr(error, 'message', '') or default}"
    if kind == "insufficient_quota":
        return ProviderError(f"{NAME}: {message} (account out of credit; not retried)", provider=NAME)
    status = _ERROR_STATUS.get(kind)
    return from_http_status(NAME, status, message, hint=hint) if status else ProviderBadResponse(
        f"{NAME}: {message}", provider=NAME)

