"""Chat model: OpenAI-compatible chat completions (``openai`` SDK, configurable ``base_url``).

The same module serves OpenAI itself, Ollama (``http://localhost:11434/v1``), llama.cpp's
``llama-server`` and vLLM: they all speak ``POST /v1/chat/completions``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..config import setting
from ..errors import ProviderBadResponse
from ..types import Conversation, ToolCall, ToolSpec
from .base import call_sdk, stream_sdk
from .openai_client import OpenAIConnection, OpenAIProvider

NAME = "openai_chat"


@dataclass(frozen=True)
class OpenAIChatSettings(OpenAIConnection):
    model: str = "gpt-5-mini"
    max_tokens: int = setting(300, minimum=1, maximum=65536)
    # OpenAI's newer models take max_completion_tokens; servers that only know max_tokens need that.
    token_field: str = setting("max_completion_tokens", choices=("max_completion_tokens", "max_tokens"))
    temperature: float | None = setting(None, minimum=0, maximum=2)  # empty: the model's default


def messages(conversation: Conversation) -> list[dict[str, str]]:
    """The conversation as chat-completions messages (also what llama.cpp's binding takes)."""
    result = [{"role": "system", "content": conversation.system}]
    for exchange in conversation.history:
        result.append({"role": "user", "content": exchange.question})
        result.append({"role": "assistant", "content": exchange.answer})
    result.append({"role": "user", "content": conversation.question})
    return result


class OpenAIChatModel(OpenAIProvider[OpenAIChatSettings]):
    """``chat.completions.create`` with the system prompt and the call's history as messages."""

    name = NAME
    Settings = OpenAIChatSettings

    def _request(self, conversation: Conversation) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.settings.model, "messages": messages(conversation),
                                   self.settings.token_field: self.settings.max_tokens}
        if self.settings.temperature is not None:
            request["temperature"] = self.settings.temperature
        return request

    def reply(self, conversation: Conversation) -> str:
        request = self._request(conversation)
        completion = call_sdk(NAME, lambda seconds: self._client.chat.completions.create(**request, timeout=seconds),
                              timeout=self.settings.timeout, retries=self.settings.retries, hint=self.hint)
        try:
            choice = completion.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, TypeError):
            raise ProviderBadResponse(f"{NAME}: no choices in the reply", provider=NAME) from None
        if not text or not text.strip():
            raise ProviderBadResponse(f"{NAME}: empty reply (finish reason {choice.finish_reason})", provider=NAME)
        return str(text).strip()

    def stream(self, conversation: Conversation) -> Iterator[str]:
        """The reply as it is generated (server-sent events ending in ``data: [DONE]``)."""
        request = self._request(conversation)
        return stream_sdk(
            NAME, lambda seconds: self._client.chat.completions.create(**request, stream=True, timeout=seconds),
            lambda chunk: _delta(chunk)[0], lambda chunk: f"finish reason {chunk and _delta(chunk)[1]}",
            timeout=self.settings.timeout, retries=self.settings.retries, hint=self.hint)

    def act(self, conversation: Conversation) -> Iterator[str | ToolCall]:
        """:meth:`stream` with ``conversation.tools`` offered as functions: the text as it is
        generated, then at most one :class:`ToolCall` (the first the model made), once its
        arguments are complete. No tools: exactly :meth:`stream`."""
        if not conversation.tools:
            return self.stream(conversation)
        request = {**self._request(conversation), "tools": [_function(tool) for tool in conversation.tools],
                   "tool_choice": "auto", "parallel_tool_calls": False}
        request["messages"] = [*request["messages"], *_tool_messages(conversation)]

        def open_stream(seconds: float) -> Iterator[_Step]:
            # A new collector for each attempt: a retried request starts from nothing.
            chunks = self._client.chat.completions.create(**request, stream=True, timeout=seconds)
            return _ToolCallCollector().steps(chunks)

        return stream_sdk(NAME, open_stream, _piece, _why_empty,
                          timeout=self.settings.timeout, retries=self.settings.retries, hint=self.hint)


def _tool_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The tools the model called for this question and their results, as the messages that
    follow the question (each call's id pairs it with its result)."""
    result: list[dict[str, Any]] = []
    for number, step in enumerate(conversation.steps):
        call_id = step.call.id or f"call_{number}"
        result.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": call_id, "type": "function",
            "function": {"name": step.call.name, "arguments": json.dumps(dict(step.call.arguments))}}]})
        result.append({"role": "tool", "tool_call_id": call_id, "content": step.result})
    return result


def _function(tool: ToolSpec) -> dict[str, Any]:
    """A tool as chat completions takes it."""
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}}


# What act's stream is made of: a chunk (None after the last) and the piece it gave ("" for none).
_Step: TypeAlias = tuple[Any, str | ToolCall]


def _piece(step: _Step) -> str | ToolCall:
    return step[1]


def _why_empty(step: _Step | None) -> str:
    return f"finish reason {(step[0] and _delta(step[0])[1]) if step else None}"


class _ToolCallCollector:
    """One streamed reply's tool call, joined from its fragments: the first call only (a
    fragment with another ``index`` or ``id`` belongs to another call, and is ignored)."""

    def __init__(self) -> None:
        self.index: int | None = None
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []
        self.started = False
        self.done = False   # the call has been passed on: nothing after it counts
        self.failure: ProviderBadResponse | None = None   # the call was unusable

    def steps(self, chunks: Iterable[Any]) -> Iterator[_Step]:
        """Each chunk with the text or the tool call it completes (at least one step a chunk,
        so an empty reply still names its finish reason); a call still open when the stream
        ends is passed on then. An unusable call is raised once the stream has ended (it ends
        with the call), so its connection can serve the next request; the SDK's stream is closed
        however this ends (the caller stopped reading, a broken stream)."""
        try:
            for chunk in chunks:
                pieces = self.feed(chunk)
                for piece in pieces:
                    yield chunk, piece
                if not pieces:
                    yield chunk, ""
            if self.failure is not None:
                raise self.failure
            if self.started and not self.done:
                yield None, self.finish()
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()

    def feed(self, chunk: Any) -> list[str | ToolCall]:
        if self.done or not chunk.choices:
            return []
        choice = chunk.choices[0]
        delta = choice.delta
        pieces: list[str | ToolCall] = []
        if delta is not None:
            if delta.content:
                pieces.append(delta.content)
            for fragment in getattr(delta, "tool_calls", None) or ():
                self.add(fragment)
        if choice.finish_reason == "tool_calls" and self.started:
            try:
                pieces.append(self.finish())
            except ProviderBadResponse as exc:
                self.failure = exc
        return pieces

    def add(self, fragment: Any) -> None:
        index, call_id = getattr(fragment, "index", None), getattr(fragment, "id", None) or ""
        if not self.started:
            self.started, self.index, self.id = True, index, call_id
        elif (index is not None and index != self.index) or (call_id and self.id and call_id != self.id):
            return  # a second call: only the first is used
        self.id = self.id or call_id
        function = getattr(fragment, "function", None)
        if function is not None:
            self.name += getattr(function, "name", None) or ""
            self.arguments.append(getattr(function, "arguments", None) or "")

    def finish(self) -> ToolCall:
        self.done = True
        name = self.name.strip()
        if not name:
            raise ProviderBadResponse(f"{NAME}: the model called a tool without naming it", provider=NAME)
        text = "".join(self.arguments)
        if not text.strip():
            return ToolCall(name, {}, self.id)  # a tool without parameters; some servers send no "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise ProviderBadResponse(f"{NAME}: the arguments of tool call {name!r} are not a JSON object: "
                                      f"{text[:200]!r}", provider=NAME)
        return ToolCall(name, arguments, self.id)


def _delta(chunk: Any) -> tuple[str, str | None]:
    if not chunk.choices:  # e.g. the usage-only chunk some servers send last
        return "", None
    choice = chunk.choices[0]
    return (choice.delta.content or "") if choice.delta else "", choice.finish_reason
