"""Speech-to-text with OpenAI ``/v1/audio/transcriptions`` (``openai`` SDK).

Works with ``gpt-4o-mini-transcribe``, ``gpt-4o-transcribe`` and ``whisper-1``, and with any
OpenAI-compatible transcription server through ``base_url``.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

from ..config import OPTIONAL_LANGUAGE_TAG, setting
from ..types import Recording, Transcript
from .base import call_sdk
from .openai_client import OpenAIConnection, OpenAIProvider

NAME = "openai_stt"


@dataclass(frozen=True)
class OpenAISpeechToTextSettings(OpenAIConnection):
    model: str = "gpt-4o-mini-transcribe"
    language: str = setting("", pattern=OPTIONAL_LANGUAGE_TAG)  # default: [general] language
    prompt: str = ""              # words to expect (names, products)


class OpenAISpeechToText(OpenAIProvider[OpenAISpeechToTextSettings]):
    """``audio.transcriptions.create`` with the 8 kHz recording sent as WAV (no resampling)."""

    name = NAME
    Settings = OpenAISpeechToTextSettings

    def transcribe(self, recording: Recording) -> Transcript:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(recording.sample_rate)
            wav.writeframes(recording.pcm)
        request: dict[str, Any] = {"model": self.settings.model, "response_format": "json",
                                   "language": self.language.split("-")[0],  # ISO 639-1, as the API takes it
                                   "file": ("question.wav", buffer.getvalue(), "audio/wav")}
        if self.settings.prompt:
            request["prompt"] = self.settings.prompt
        result = call_sdk(NAME, lambda seconds: self._client.audio.transcriptions.create(**request, timeout=seconds),
                          timeout=self.settings.timeout, retries=self.settings.retries, hint=self.hint)
        return Transcript(text=(getattr(result, "text", "") or "").strip())
