"""The Protocols every provider implements, and the values they exchange."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class Recording:
    """The caller's question: 16-bit signed little-endian mono PCM."""

    pcm: bytes
    sample_rate: int = 8000

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


@dataclass(frozen=True)
class Transcript:
    """What the caller said. ``text`` is empty when no speech was recognised."""

    text: str
    confidence: float | None = None


@dataclass(frozen=True)
class Exchange:
    """One earlier question and answer of the same call."""

    question: str
    answer: str


@dataclass(frozen=True)
class SpeechAudio:
    """Synthesised speech as returned by a provider, before conversion for the phone."""

    data: bytes
    encoding: Literal["s16le", "mulaw", "wav", "mp3"]
    sample_rate: int


class SpeechToText(Protocol):
    name: str

    def transcribe(self, recording: Recording) -> Transcript:
        """Return the transcript; raise ``ProviderError`` on failure."""
        ...


class ChatModel(Protocol):
    name: str

    def reply(self, history: Sequence[Exchange], question: str) -> str:
        """Return the assistant's answer to ``question`` given the call's ``history``."""
        ...


class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str) -> SpeechAudio:
        """Return speech for ``text``; raise ``ProviderError`` on failure."""
        ...
