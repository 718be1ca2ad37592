"""The Protocols every provider implements, and the values they exchange."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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


class StreamingChatModel(ChatModel, Protocol):
    def stream(self, history: Sequence[Exchange], question: str) -> Iterator[str]:
        """Yield the answer in pieces as the model generates it (fails before the first piece
        when the provider fails at once, so a fallback can still take over)."""
        ...


class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str) -> SpeechAudio:
        """Return speech for ``text``; raise ``ProviderError`` on failure."""
        ...


def synthesize_in_parts(provider: str, text: str, max_chars: int,
                        synthesize_one: Callable[[str], SpeechAudio]) -> SpeechAudio:
    """Speech for ``text``, synthesised in pieces of at most ``max_chars`` (the provider's input
    limit) cut at sentence ends, then joined. Only for raw encodings (s16le, mulaw), which join
    by concatenation. Empty text is a :class:`ProviderBadResponse`."""
    from ..errors import ProviderBadResponse
    from ..speakable import split_text

    text = text.strip()
    if not text:
        raise ProviderBadResponse(f"{provider}: nothing to say", provider=provider)
    parts = [synthesize_one(piece) for piece in split_text(text, max_chars)]
    first = parts[0]
    return SpeechAudio(b"".join(p.data for p in parts), first.encoding, first.sample_rate)
