"""The values every layer exchanges: audio, transcripts, the conversation, calls and turns.

Plain frozen dataclasses and enums with no behaviour beyond their own fields, so that any module
can use them without importing another layer (storage does not import the providers to know what
an exchange is, and the providers do not import the turn to know what a conversation is).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


class Capability(enum.StrEnum):
    """What a provider does."""

    STT = "stt"
    LLM = "llm"
    TTS = "tts"
    ENGINE = "engine"  # a real-time call's whole conversation (a speech-to-speech model, an AI server)


class Stage(enum.StrEnum):
    """Where a turn is: the stage whose failure names the turn's status (``stt_error`` ...)."""

    STT = "stt"
    LLM = "llm"
    TTS = "tts"


class TurnStatus(enum.StrEnum):
    """How a turn ended, as stored."""

    OK = "ok"
    NO_SPEECH = "no_speech"
    STT_ERROR = "stt_error"
    LLM_ERROR = "llm_error"
    TTS_ERROR = "tts_error"
    HANGUP = "hangup"
    ERROR = "error"


class CallState(enum.StrEnum):
    """Where the call is, as the dialplan's ``VA_STATE`` tells the ``h`` extension."""

    RECORDING = "recording"
    THINKING = "thinking"
    ANSWERING = "answering"
    DONE = "done"
    TRANSFERRING = "transferring"  # ringing a [destinations] target
    TRANSFERRED = "transferred"    # a person took the call
    MESSAGE = "message"            # leaving a message


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
    # The language the recogniser heard, as it names it (e.g. "de-de"), when it says; "" otherwise.
    language: str = ""


@dataclass(frozen=True)
class TranscriptEvent:
    """What a streaming recogniser reports while the caller speaks.

    An interim event (``is_final`` false) is the current guess at the words not yet settled;
    ``stability`` (0..1, None when not given) is how likely it is to stay. A final event holds
    settled words, with the recogniser's ``confidence`` (None when not given). An event with
    ``end_of_utterance`` says the recogniser heard the caller stop (its text is empty; the final
    result may follow it). ``offset_ms``: where in the streamed audio, counted from its first
    sample, the words end or the event happened.
    """

    text: str
    is_final: bool = False
    stability: float | None = None
    confidence: float | None = None
    end_of_utterance: bool = False
    offset_ms: int = 0


@dataclass(frozen=True)
class Exchange:
    """One earlier question and answer of the same call."""

    question: str
    answer: str


@dataclass(frozen=True)
class ToolSpec:
    """A function the chat model may call instead of answering in words: its name, what it does
    (the model reads this to decide), and its arguments as a JSON schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """The chat model asks for one of the offered :class:`ToolSpec` (``arguments``: as the model
    sent them, not yet checked against the schema)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default="", compare=False)  # the API's id for the call, if any (OpenAI's tool_call_id)


@dataclass(frozen=True)
class ToolStep:
    """A tool the model called while answering, and what it gave back (text for the model)."""

    call: ToolCall
    result: str


@dataclass(frozen=True)
class Conversation:
    """What a chat model is asked: its instructions (with the facts it may use), the call so far
    and the caller's new question, and the tools it may call (none: it answers in words only).
    Built once, for every chat model, by ``call.conversation``."""

    system: str
    history: tuple[Exchange, ...]
    question: str
    tools: tuple[ToolSpec, ...] = ()
    # The tools already called for this question, with their results: the model goes on from there.
    steps: tuple[ToolStep, ...] = ()


@dataclass(frozen=True)
class SpeechAudio:
    """Synthesised speech as returned by a provider, before conversion for the phone."""

    data: bytes
    encoding: Literal["s16le", "mulaw", "wav", "mp3"]
    sample_rate: int


@dataclass
class CallInfo:
    """What Asterisk told us about the call (AGI environment and arguments)."""

    uniqueid: str
    linkedid: str = ""
    channel: str = ""
    caller_number: str = ""
    caller_name: str = ""
    extension: str = ""


@dataclass
class TurnRecord:
    """One question and answer, with its outcome and per-stage timings in milliseconds."""

    turn_number: int
    status: str = TurnStatus.OK.value
    error: str | None = None
    transcript: str | None = None
    stt_confidence: float | None = None
    reply: str | None = None
    recording_path: str | None = None
    answer_path: str | None = None
    stt_provider: str | None = None
    llm_provider: str | None = None
    tts_provider: str | None = None
    # A real-time call: the caller spoke over the answer, and what of it they heard before.
    interrupted: bool = False
    heard_reply: str | None = None
    # What the assistant did besides answering (call.actions): transfer, message, end_call,
    # refused (the model or caller asked for something not allowed), and its target.
    action: str | None = None
    action_target: str | None = None
    # A line of a transcribed call between people (the web console's live transcripts): who said
    # it, caller or callee; None for the assistant's own turns.
    speaker: str | None = None
    # The language the turn was served in (a configured tag, e.g. de-DE).
    language: str | None = None
    timings: dict[str, int] = field(default_factory=dict)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    finished_at: dt.datetime | None = None


class EngineEventKind(enum.StrEnum):
    """What a conversation engine (``[live] engine``) tells the call."""

    AUDIO = "audio"                  # the assistant's speech: 8 kHz μ-law
    CALLER_SAID = "caller_said"      # the engine's transcript of the caller
    ASSISTANT_SAID = "assistant_said"  # the engine's transcript of its own answer
    SPEECH_STARTED = "speech_started"  # the caller started talking (over the answer: barge-in)
    DONE = "done"                    # the answer is complete
    TOOL_CALL = "tool_call"          # the engine asks for an action or one of the business's tools
    ERROR = "error"                  # ``fatal``: the engine cannot go on (the cascade takes over)


@dataclass(frozen=True)
class EngineEvent:
    kind: EngineEventKind
    audio: bytes = b""
    text: str = ""
    fatal: bool = False
    tool: ToolCall | None = None
