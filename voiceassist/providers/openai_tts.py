"""Text-to-speech with OpenAI ``/v1/audio/speech`` (``openai`` SDK).

OpenAI has announced the shutdown of tts-1, tts-1-hd and gpt-4o-mini-tts for 2027-01-06; the model
is a config value and the provider is one of several behind the ``TextToSpeech`` Protocol.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..errors import ProviderBadResponse
from ..deadline import budget
from ._errors import map_sdk_error, with_retries
from .base import SpeechAudio, synthesize_in_parts
from .openai_client import key_hint, openai_client

NAME = "openai_tts"
_KEY_HINT = key_hint(NAME)
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
        self.timeout = section.get_float("timeout")
        self._client = openai_client(config, NAME, timeout=self.timeout)

    def synthesize(self, text: str) -> SpeechAudio:
        return synthesize_in_parts(NAME, text, MAX_INPUT_CHARS, self._synthesize_one)

    def _synthesize_one(self, text: str) -> SpeechAudio:
        kwargs: dict[str, Any] = {
            "model": self.model, "voice": self.voice, "input": text,
            "response_format": "pcm", "speed": self.speed,
        }
        if self.instructions and self.model not in _NO_INSTRUCTIONS:
            kwargs["instructions"] = self.instructions

        def call() -> bytes:
            try:
                return bytes(self._client.audio.speech.create(**kwargs, timeout=budget(self.timeout, NAME)).read())
            except Exception as exc:
                raise map_sdk_error(NAME, exc, hint=_KEY_HINT) from None

        pcm = with_retries(call, provider=NAME, retries=self.retries)
        if len(pcm) < 2:
            raise ProviderBadResponse(f"{NAME}: empty audio", provider=NAME)
        return SpeechAudio(data=pcm[: len(pcm) // 2 * 2], encoding="s16le", sample_rate=24000)
