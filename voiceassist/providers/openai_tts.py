"""Text-to-speech with OpenAI ``/v1/audio/speech`` (``openai`` SDK).

OpenAI has announced the shutdown of tts-1, tts-1-hd and gpt-4o-mini-tts for 2027-01-06; the model
is a config value and the provider is one of several behind the ``TextToSpeech`` Protocol.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import Config
from ..errors import ProviderAuthError, ProviderBadResponse, ProviderError, ProviderNotInstalled
from ._errors import from_http_status, from_transport, with_retries
from .base import SpeechAudio

NAME = "openai_tts"
_KEY_HINT = "set [openai_tts] api_key or OPENAI_API_KEY"
MAX_INPUT_CHARS = 4096
# tts-1 and tts-1-hd reject "instructions".
_NO_INSTRUCTIONS = {"tts-1", "tts-1-hd"}


class OpenAITextToSpeech:
    """``audio.speech.create`` with ``response_format=pcm`` (24 kHz s16le, no header)."""

    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.model = section.get("model")
        self.voice = section.get("voice")
        self.speed = section.get_float("speed")
        self.instructions = section.get("instructions")
        self.retries = section.get_int("retries")
        api_key = section.get("api_key") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ProviderAuthError(f"{NAME}: no API key ({_KEY_HINT})", provider=NAME)
        try:
            import openai
        except ImportError:
            raise ProviderNotInstalled("openai is not installed: pip install 'voiceassist[openai]'", provider=NAME) from None
        # max_retries=0: our own retry loop decides (the SDK would retry insufficient_quota-free 429s
        # with up to 8 s back-off); timeout replaces the SDK's 600 s default.
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=section.get("base_url") or os.environ.get("OPENAI_BASE_URL") or None,
            timeout=section.get_float("timeout"),
            max_retries=0,
        )

    def synthesize(self, text: str) -> SpeechAudio:
        text = text.strip()
        if not text:
            raise ProviderBadResponse(f"{NAME}: nothing to say", provider=NAME)
        if len(text) > MAX_INPUT_CHARS:
            text = text[:MAX_INPUT_CHARS]
        kwargs: dict[str, Any] = {
            "model": self.model, "voice": self.voice, "input": text,
            "response_format": "pcm", "speed": self.speed,
        }
        if self.instructions and self.model not in _NO_INSTRUCTIONS:
            kwargs["instructions"] = self.instructions

        def call() -> bytes:
            try:
                return bytes(self._client.audio.speech.create(**kwargs).read())
            except Exception as exc:
                raise _map_error(exc) from None

        pcm = with_retries(call, provider=NAME, retries=self.retries)
        if len(pcm) < 2:
            raise ProviderBadResponse(f"{NAME}: empty audio", provider=NAME)
        return SpeechAudio(data=pcm[: len(pcm) // 2 * 2], encoding="s16le", sample_rate=24000)


def _map_error(exc: Exception) -> ProviderError:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):  # openai.APIStatusError
        code = getattr(exc, "code", None) or ""
        message = f"{status} {code} {getattr(exc, 'message', exc)}".strip()
        if status == 429 and code == "insufficient_quota":
            return ProviderError(f"{NAME}: {message} (account out of credit; not retried)", provider=NAME)
        return from_http_status(NAME, status, message, hint=_KEY_HINT)
    mapped = from_transport(NAME, exc)
    return mapped or ProviderError(f"{NAME}: {type(exc).__name__}: {exc}", provider=NAME)
