"""Text-to-speech with OpenAI ``/v1/audio/speech`` (``openai`` SDK).

OpenAI has announced the shutdown of tts-1, tts-1-hd and gpt-4o-mini-tts for 2027-01-06; the model
is a config value and the provider is one of several behind the ``TextToSpeech`` Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import seconds, setting
from ..errors import ProviderBadResponse
from ..types import SpeechAudio
from .base import call_sdk, synthesize_in_parts
from .openai_client import OpenAIConnection, OpenAIProvider

NAME = "openai_tts"
MAX_INPUT_CHARS = 4096
# tts-1 and tts-1-hd reject "instructions".
_NO_INSTRUCTIONS = {"tts-1", "tts-1-hd"}


@dataclass(frozen=True)
class OpenAITextToSpeechSettings(OpenAIConnection):
    timeout: float = seconds(10.0)
    model: str = "gpt-4o-mini-tts"
    voice: str = "coral"
    speed: float = setting(1.0, minimum=0.25, maximum=4.0)
    instructions: str = "Speak warmly and clearly, like a helpful receptionist on the phone."


class OpenAITextToSpeech(OpenAIProvider[OpenAITextToSpeechSettings]):
    """``audio.speech.create`` with ``response_format=pcm`` (24 kHz s16le, no header)."""

    name = NAME
    Settings = OpenAITextToSpeechSettings

    def synthesize(self, text: str) -> SpeechAudio:
        return synthesize_in_parts(NAME, text, MAX_INPUT_CHARS, self._synthesize_one)

    def _synthesize_one(self, text: str) -> SpeechAudio:
        settings = self.settings
        kwargs: dict[str, Any] = {
            "model": settings.model, "voice": settings.voice, "input": text,
            "response_format": "pcm", "speed": settings.speed,
        }
        if settings.instructions and settings.model not in _NO_INSTRUCTIONS:
            kwargs["instructions"] = settings.instructions
        pcm = call_sdk(NAME, lambda seconds: bytes(self._client.audio.speech.create(**kwargs, timeout=seconds).read()),
                       timeout=settings.timeout, retries=settings.retries, hint=self.hint)
        if len(pcm) < 2:
            raise ProviderBadResponse(f"{NAME}: empty audio", provider=NAME)
        return SpeechAudio(data=pcm[: len(pcm) // 2 * 2], encoding="s16le", sample_rate=24000)
