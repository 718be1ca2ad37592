"""Speech-to-text with OpenAI ``/v1/audio/transcriptions`` (``openai`` SDK).

Works with ``gpt-4o-mini-transcribe``, ``gpt-4o-transcribe`` and ``whisper-1``, and with any
OpenAI-compatible transcription server through ``base_url``.
"""

from __future__ import annotations

import io
import wave
from typing import Any

from ..config import Config
from ..deadline import budget
from ._errors import map_sdk_error, with_retries
from .base import Recording, Transcript
from .openai_client import key_hint, openai_client

NAME = "openai_stt"


class OpenAISpeechToText:
    """``audio.transcriptions.create`` with the 8 kHz recording sent as WAV (no resampling)."""

    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.model = section.get("model")
        self.language = (section.get("language") or config.section("general").get("language")).split("-")[0]
        self.prompt = section.get("prompt")
        self.timeout = section.get_float("timeout")
        self.retries = section.get_int("retries")
        self.hint = key_hint(NAME)
        self._client = openai_client(config, NAME, timeout=self.timeout)

    def transcribe(self, recording: Recording) -> Transcript:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(recording.sample_rate)
            wav.writeframes(recording.pcm)
        request: dict[str, Any] = {"model": self.model, "file": ("question.wav", buffer.getvalue(), "audio/wav"),
                                   "language": self.language, "response_format": "json"}
        if self.prompt:
            request["prompt"] = self.prompt

        def call() -> Any:
            try:
                return self._client.audio.transcriptions.create(**request, timeout=budget(self.timeout, NAME))
            except Exception as exc:
                raise map_sdk_error(NAME, exc, hint=self.hint) from None

        result = with_retries(call, provider=NAME, retries=self.retries)
        return Transcript(text=(getattr(result, "text", "") or "").strip())
