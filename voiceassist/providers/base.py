"""What every provider is and shares: the Protocols the turn and the fallback chain are typed
against, the context a provider is built with, and the one way to call an SDK.

A provider is one module: a frozen settings dataclass (its config section, checked when the
config is loaded) and a class built from those settings and a :class:`ProviderContext`. Its SDK
is imported in the constructor, never at the top of the module. Every SDK call goes through
:func:`call_sdk` (or :func:`stream_sdk`): the turn's remaining time as its timeout, the SDK's
exceptions mapped onto :class:`~voiceassist.errors.ProviderError`, and our retries (429, 5xx,
timeouts; never ``insufficient_quota``), so no provider repeats that wrapper.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from .. import deadline
from ..config import LLMChoice, retries, seconds
from ..errors import ProviderBadResponse, ProviderError, ProviderNotInstalled, TurnDeadlineExceeded
from ..text.knowledge import read_knowledge
from ..types import (Conversation, EngineEvent, Exchange, Recording, SpeechAudio, ToolCall, ToolSpec, Transcript,
                     TranscriptEvent)
from .sdk_errors import map_sdk_error

__all__ = ["ChatModel", "Conversation", "Exchange", "Provider", "ProviderContext", "Recording", "RequestSettings",
           "SpeechAudio", "SpeechToText", "import_sdk", "StreamingChatModel", "TextToSpeech", "Transcript", "call_sdk", "stream_sdk",
           "synthesize_in_parts", "with_retries", "StreamingSpeechToText", "TranscriptEvent", "ToolCall",
           "ToolCallingChatModel"]

T = TypeVar("T")
S = TypeVar("S")
P = TypeVar("P")


@dataclass(frozen=True)
class ProviderContext:
    """What a provider may know of the rest of the configuration (it reads no other section).

    ``language``: the call's language tag (``[general] language`` unless the provider's own
    section sets one); ``knowledge_file``: the admin's facts (read through :meth:`knowledge`,
    which sees an edit without a restart); ``ffmpeg``: the program for conversions that need it.
    """

    language: str = "en-US"
    knowledge_file: str = ""
    ffmpeg: str = "ffmpeg"
    unknown_answer: str = LLMChoice.unknown_answer  # [llm] unknown_answer
    # Other languages the caller may be speaking ([general] detect_language, the first question):
    # a recogniser that can tell offers them besides ``language`` and says which it heard.
    alternative_languages: tuple[str, ...] = ()

    def knowledge(self) -> str:
        """The knowledge file's text ("" when none is configured)."""
        return read_knowledge(self.knowledge_file)


@dataclass(frozen=True)
class RequestSettings:
    """Settings every cloud provider has: seconds one request may take, and how often a failed
    one (429, 5xx, a timeout) is tried again. A provider redeclares one to change its default."""

    timeout: float = seconds(8.0)
    retries: int = retries(1)


class Provider(Generic[S]):
    """What every provider class is: built from its settings (the dataclass named by
    ``Settings``) and a context; :meth:`setup` imports its SDK and creates its client."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    # Chat models: the most characters of the knowledge file they are given (None: all of it).
    max_fact_chars: ClassVar[int | None] = None

    def __init__(self, settings: S, context: ProviderContext) -> None:
        self.settings = settings
        self.context = context
        self.setup()

    def setup(self) -> None:
        """Import the SDK and create its client (errors: ProviderNotInstalled, ProviderAuthError,
        ConfigError, each naming what to install or set)."""

    def close(self) -> None:
        """Release the client's connections (a provider lives as long as its process; this is for
        code that makes one for a while, such as ``doctor`` and tests)."""

    @property
    def language(self) -> str:
        """The language it hears or speaks: its own ``language`` setting, else the call's."""
        return str(getattr(self.settings, "language", "") or self.context.language)


@runtime_checkable
class SpeechToText(Protocol):
    name: str

    def transcribe(self, recording: Recording) -> Transcript:
        """Return the transcript; raise ``ProviderError`` on failure."""
        ...


@runtime_checkable
class StreamingSpeechToText(SpeechToText, Protocol):
    def stream(self, audio: Iterable[bytes], sample_rate: int) -> Iterator[TranscriptEvent]:
        """Recognise speech while it is spoken.

        ``audio``: 16-bit signed little-endian mono PCM at ``sample_rate``, in chunks (typically
        20 ms) as they arrive in real time; it is read on another thread. Yields interim and
        final :class:`TranscriptEvent` as the recogniser sends them, and ends when the audio ends
        or once the recogniser has signalled the end of the utterance (it then reads no more
        audio) and sent its last result. No turn deadline applies (the stream lasts as long as
        the caller talks), but a recogniser that has not finished within the provider's
        configured time after the audio ended raises ``ProviderTimeout``; other failures raise
        the matching ``ProviderError``, at the start or mid-stream. An exception raised by
        ``audio`` ends the stream and is raised again here.
        """
        ...


@runtime_checkable
class ChatModel(Protocol):
    name: str
    # The most characters of the knowledge file this model is given (None: all of it). A small
    # local model gets only the sections that match the question.
    max_fact_chars: ClassVar[int | None]

    def reply(self, conversation: Conversation) -> str:
        """Return the assistant's answer to ``conversation.question``."""
        ...


@runtime_checkable
class StreamingChatModel(ChatModel, Protocol):
    def stream(self, conversation: Conversation) -> Iterator[str]:
        """Yield the answer in pieces as the model generates it (fails before the first piece
        when the provider fails at once, so a fallback can still take over)."""
        ...


@runtime_checkable
class ToolCallingChatModel(ChatModel, Protocol):
    def act(self, conversation: Conversation) -> Iterator[str | ToolCall]:
        """Like :meth:`StreamingChatModel.stream`, with ``conversation.tools`` offered to the model:
        yields the answer's text pieces as they are generated, or a :class:`ToolCall` when the model
        calls a tool (text it said before the call comes first; nothing of the answer follows it).
        Fails before the first piece when the provider fails at once."""
        ...


@runtime_checkable
class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str) -> SpeechAudio:
        """Return speech for ``text``; raise ``ProviderError`` on failure."""
        ...


@runtime_checkable
class StreamingTextToSpeech(TextToSpeech, Protocol):
    def synthesize_stream(self, text: str) -> Iterator[SpeechAudio]:
        """Speech for ``text`` in chunks as the provider produces them: raw PCM (``s16le``) or
        μ-law, all at one sample rate, in order, the first as early as the provider allows.

        A failure before the first chunk raises (so a fallback provider can take over; the turn's
        deadline bounds the wait for it); after it, the iterator ends with the matching
        ``ProviderError``. Closing the iterator early (the caller interrupted) stops the request
        and releases its connection.
        """
        ...


@runtime_checkable
class EngineSession(Protocol):
    """One call's session with a conversation engine: the caller's audio in, events out."""

    def send_audio(self, mulaw: bytes) -> None:
        """The caller's audio as it arrives (8 kHz μ-law); raises ``ProviderError`` when the
        engine is gone."""
        ...

    def send_text(self, text: str) -> None:
        """Something the caller did without speaking (a key pressed), told to the engine."""
        ...

    def answer_cut(self, played_seconds: float) -> None:
        """The caller talked over the answer in progress and heard ``played_seconds`` of it:
        an engine that keeps the conversation's context stops the answer and trims it to that."""
        ...

    def send_tool_result(self, call: ToolCall, output: str) -> None:
        """The outcome of a ``TOOL_CALL`` event the engine sent, for it to answer from."""
        ...

    def next_event(self, timeout: float) -> EngineEvent | None:
        """The engine's next event, waiting at most ``timeout`` (None: nothing yet). A lost
        connection is an ``ERROR`` event with ``fatal`` set."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class ConversationEngine(Protocol):
    """Hears the caller and answers in speech itself (``[live] engine``), instead of the cascade
    of speech-to-text, chat model and text-to-speech."""

    name: str

    def open(self, instructions: str, history: list[Exchange], tools: Sequence[ToolSpec] = ()) -> EngineSession:
        """Start a session; raises ``ProviderError`` when the engine cannot be reached. ``tools``:
        what the engine may call (an engine that cannot call tools ignores them)."""
        ...


def import_sdk(provider: str, module: str, *, package: str, extra: str) -> Any:
    """The SDK module ``module``, imported now (not when voiceassist starts), or one
    :class:`ProviderNotInstalled` line naming the pip ``package`` and our ``extra`` that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ProviderNotInstalled(f"{package} is not installed: pip install 'voiceassist[{extra}]'",
                                   provider=provider) from None


def with_retries(call: Callable[[], T], *, provider: str, retries: int, first_delay: float = 0.2) -> T:
    """Run ``call()``; retry ``retries`` more times on retryable provider errors, with backoff.

    The SDKs' own retries are switched off by every provider: theirs are either absent, unbounded
    (Speech v1 retries for up to 5000 s) or retry errors that must not be retried. No retry starts
    when the turn's deadline (:mod:`voiceassist.deadline`) would pass during the back-off.
    """
    delay = first_delay
    for attempt in range(retries + 1):
        try:
            return call()
        except ProviderError as exc:
            if not exc.retryable or attempt == retries:
                raise
            left = deadline.remaining()
            if left is not None and left < delay + deadline.MINIMUM_USEFUL:
                raise TurnDeadlineExceeded(f"{exc} (no time left in the turn to retry)", provider=provider) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def call_sdk(provider: str, request: Callable[[float], T], *, timeout: float, retries: int, hint: str = "") -> T:
    """``request(seconds)``: one SDK call given what is left of the turn (at most ``timeout``) as
    its timeout, its exceptions mapped (``hint`` names the setting to fix on an auth error) and
    retried by :func:`with_retries`."""
    def attempt() -> T:
        try:
            return request(deadline.budget(timeout, provider))
        except ProviderError:
            raise
        except Exception as exc:
            raise map_sdk_error(provider, exc, hint=hint) from None

    return with_retries(attempt, provider=provider, retries=retries)


def stream_sdk(provider: str, open_stream: Callable[[float], Iterable[Any]], piece_of: Callable[[Any], P],
               why_empty: Callable[[Any], str], *, timeout: float, retries: int, hint: str = "") -> Iterator[P]:
    """The pieces of a streamed reply: ``piece_of(chunk)`` is a chunk's text (or, for a model
    offered tools, a :class:`ToolCall` once one is complete); a falsy piece is skipped.

    Opening the stream and waiting for its first piece are one :func:`call_sdk` (retried, and
    failing before anything is yielded, so a fallback provider can still answer); once a piece has
    been passed on, a broken stream is an error, not a retry.
    """
    def first(seconds: float) -> tuple[Iterator[Any], P]:
        chunks = iter(open_stream(seconds))
        last = None
        for last in chunks:
            piece = piece_of(last)
            if piece:
                return chunks, piece
        raise ProviderBadResponse(f"{provider}: empty reply ({why_empty(last)})", provider=provider)

    chunks, piece = call_sdk(provider, first, timeout=timeout, retries=retries, hint=hint)
    yield piece
    try:
        for chunk in chunks:
            piece = piece_of(chunk)
            if piece:
                yield piece
    except Exception as exc:
        raise map_sdk_error(provider, exc, hint=hint) from None


def synthesize_in_parts(provider: str, text: str, max_chars: int,
                        synthesize_one: Callable[[str], SpeechAudio]) -> SpeechAudio:
    """Speech for ``text``, synthesised in pieces of at most ``max_chars`` (the provider's input
    limit) cut at sentence ends, then joined. Only for raw encodings (s16le, mulaw), which join
    by concatenation. Empty text is a :class:`ProviderBadResponse`."""
    from ..text.speakable import split_text

    text = text.strip()
    if not text:
        raise ProviderBadResponse(f"{provider}: nothing to say", provider=provider)
    parts = [synthesize_one(piece) for piece in split_text(text, max_chars)]
    first = parts[0]
    return SpeechAudio(b"".join(p.data for p in parts), first.encoding, first.sample_rate)
