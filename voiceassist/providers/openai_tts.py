"""Text-to-speech with OpenAI ``/v1/audio/speech`` (``openai`` SDK).

OpenAI has announced the shutdown of tts-1, tts-1-hd and gpt-4o-mini-tts for 2027-01-06; the model
is a config value and the provider is one of several behind the ``TextToSpeech`` Protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import seconds, setting
from ..errors import ProviderBadResponse, ProviderError
from ..types import SpeechAudio
from .base import call_sdk, synthesize_in_parts
from .sdk_errors import map_sdk_error
from .openai_client import OpenAIConnection, OpenAIProvider

NAME = "openai_tts"
MAX_INPUT_CHARS = 4096
# Bytes read from a streamed answer at a time: 100 ms of 24 kHz 16-bit PCM.
STREAM_CHUNK_BYTES = 4800
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
    """``audio.speech.create`` with ``response_format=pcm`` (24 kHz s16le, no header); streamed
    (the HTTP response read as it arrives) for the real-time conversation."""

    name = NAME
    Settings = OpenAITextToSpeechSettings

    def synthesize(self, text: str) -> SpeechAudio:
        return synthesize_in_parts(NAME, text, MAX_INPUT_CHARS, self._synthesize_one)

    def synthesize_stream(self, text: str) -> Iterator[SpeechAudio]:
        from ..text.speakable import split_text

        text = text.strip()
        if not text:
            raise ProviderBadResponse(f"{NAME}: nothing to say", provider=NAME)
        for piece in split_text(text, MAX_INPUT_CHARS):
            yield from self._stream_one(piece)

    def _stream_one(self, text: str) -> Iterator[SpeechAudio]:
        """One request's audio as it arrives. Opening it and its first bytes are one retried
        :func:`call_sdk` (a failure there raises before anything was said, so a fallback voice can
        take over); a stream that breaks later ends with the matching ProviderError."""
        kwargs = self._request(text)
        speech = self._client.audio.speech.with_streaming_response

        def first(seconds: float) -> tuple[Any, Iterator[bytes], bytes]:
            manager = speech.create(**kwargs, timeout=seconds)
            response = manager.__enter__()
            try:
                chunks = iter(response.iter_bytes(STREAM_CHUNK_BYTES))
                for chunk in chunks:
                    if chunk:
                        return manager, chunks, chunk
            except BaseException:
                manager.__exit__(None, None, None)
                raise
            manager.__exit__(None, None, None)
            raise ProviderBadResponse(f"{NAME}: empty audio", provider=NAME)

        manager, chunks, chunk = call_sdk(NAME, first, timeout=self.settings.timeout, retries=self.settings.retries,
                                          hint=self.hint)
        try:
            carry = b""
            while True:
                data = carry + chunk
                whole = len(data) // 2 * 2  # a sample may be split between two reads
                carry = data[whole:]
                if whole:
                    yield SpeechAudio(data=data[:whole], encoding="s16le", sample_rate=24000)
                chunk = next(chunks, b"")
                if not chunk:
                    return
        except ProviderError:
            raise
        except Exception as exc:
            raise map_sdk_error(NAME, exc, hint=self.hint) from None
        finally:
            manager.__exit__(None, None, None)  # also when the caller interrupted: the connection is released

    def _request(self, text: str) -> dict[str, Any]:
        settings = self.settings
        kwargs: dict[str, Any] = {
            "model": settings.model, "voice": settings.voice, "input": text,
            "response_format": "pcm", "speed": settings.speed,
        }
        if settings.instructions and settings.model not in _NO_INSTRUCTIONS:
            kwargs["instructions"] = settings.instructions
        return kwargs

    def _synthesize_one(self, text: str) -> SpeechAudio:
        settings = self.settings
        kwargs = self._request(text)
        pcm = call_sdk(NAME, lambda seconds: bytes(self._client.audio.speech.create(**kwargs, timeout=seconds).read()),
                       timeout=settings.timeout, retries=settings.retries, hint=self.hint)
        if len(pcm) < 2:
            raise ProviderBadResponse(f"{NAME}: empty audio", provider=NAME)
        return SpeechAudio(data=pcm[: len(pcm) // 2 * 2], encoding="s16le", sample_rate=24000)
