"""Chat model: Gemini through ``google-genai`` (the maintained SDK; google-generativeai is dead).

Two backends with the same model family: the Gemini API with an API key (default), or Vertex AI
with a service account (``[gemini] backend = vertex`` plus an explicit project and location).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import setting
from ..errors import ProviderAuthError, ProviderBadResponse
from ..types import Conversation, ToolCall, ToolStep
from .base import Provider, RequestSettings, call_sdk, import_sdk, stream_sdk
from .google_credentials import service_account_credentials

NAME = "gemini"
_KEY_HINT = "set [gemini] api_key or GEMINI_API_KEY"
_VERTEX_HINT = "set [gemini] credentials_file or GOOGLE_APPLICATION_CREDENTIALS, project and location"


@dataclass(frozen=True)
class GeminiConnection:
    """How a Gemini provider reaches Google (``[gemini_live]`` falls back to ``[gemini]``'s)."""

    backend: str = setting("api", choices=("api", "vertex"))  # api key | Vertex AI service account
    api_key: str = setting("", secret=True)  # api: else GEMINI_API_KEY or GOOGLE_API_KEY
    project: str = ""             # vertex
    location: str = ""            # vertex, e.g. us-central1
    credentials_file: str = ""    # vertex: else GOOGLE_APPLICATION_CREDENTIALS
    base_url: str = ""            # default: generativelanguage.googleapis.com / {location}-aiplatform...
    api_version: str = ""         # default: v1beta (api), the SDK's own (vertex)


@dataclass(frozen=True)
class GeminiSettings(RequestSettings, GeminiConnection):
    model: str = "gemini-2.5-flash"
    max_output_tokens: int = setting(256, minimum=1, maximum=65536)
    temperature: float = setting(0.3, minimum=0, maximum=2)
    # Tokens the model may think before answering (0: none, the fastest; -1: the model decides).
    thinking_budget: int | None = setting(0, minimum=-1, maximum=32768)


class GeminiChatModel(Provider[GeminiSettings]):
    """Gemini ``generateContent`` with the call's earlier turns passed as chat history."""

    name = NAME
    Settings = GeminiSettings

    def setup(self) -> None:
        self.vertex = self.settings.backend == "vertex"
        self.hint = _VERTEX_HINT if self.vertex else _KEY_HINT
        self._client, self._types = gemini_client(NAME, self.settings)

    def _tools(self, conversation: Conversation) -> list[Any]:
        types = self._types
        return [types.Tool(function_declarations=[
            types.FunctionDeclaration(name=tool.name, description=tool.description,
                                      parameters_json_schema=dict(tool.parameters))
            for tool in conversation.tools])]

    def _chat(self, conversation: Conversation, seconds: float, tools: bool = False) -> Any:
        types = self._types
        past: list[Any] = []
        for exchange in conversation.history:
            past.append(types.Content(role="user", parts=[types.Part(text=exchange.question)]))
            past.append(types.Content(role="model", parts=[types.Part(text=exchange.answer)]))
        generation: dict[str, Any] = {
            "system_instruction": conversation.system,
            "max_output_tokens": self.settings.max_output_tokens,
            "temperature": self.settings.temperature,
            # Per request, so each call gets what is left of the turn (milliseconds).
            "http_options": types.HttpOptions(timeout=int(seconds * 1000)),
        }
        if tools and conversation.tools:
            generation["tools"] = self._tools(conversation)
            # We carry out the call ourselves (an action for the dialplan), never the SDK.
            generation["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
        if self.settings.thinking_budget is not None:
            generation["thinking_config"] = types.ThinkingConfig(thinking_budget=self.settings.thinking_budget)
        if conversation.steps:
            # The question, then each tool the model called with its result; the last result is
            # the message this request sends (see _message).
            past.append(types.Content(role="user", parts=[types.Part(text=conversation.question)]))
            for i, step in enumerate(conversation.steps):
                past.append(types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
                    name=step.call.name, args=dict(step.call.arguments)))]))
                if i < len(conversation.steps) - 1:
                    past.append(types.Content(role="user", parts=[self._result(step)]))
        return self._client.chats.create(model=self.settings.model, config=types.GenerateContentConfig(**generation),
                                         history=past)

    def _result(self, step: ToolStep) -> Any:
        return self._types.Part.from_function_response(name=step.call.name, response={"content": step.result})

    def _message(self, conversation: Conversation) -> Any:
        """What this request sends: the caller's question, or the result of the tool just called."""
        return self._result(conversation.steps[-1]) if conversation.steps else conversation.question

    def reply(self, conversation: Conversation) -> str:
        response = call_sdk(NAME, lambda seconds: self._chat(conversation, seconds).send_message(conversation.question),
                            timeout=self.settings.timeout, retries=self.settings.retries, hint=self.hint)
        text = response.text  # None when blocked, or when thinking used up the token budget
        if not text or not text.strip():
            raise ProviderBadResponse(f"{NAME}: empty reply (finish reason {_finish_reason(response)})", provider=NAME)
        return str(text).strip()

    def stream(self, conversation: Conversation) -> Iterator[str]:
        """The reply as it is generated (``streamGenerateContent`` over server-sent events)."""
        return stream_sdk(
            NAME, lambda seconds: self._chat(conversation, seconds).send_message_stream(conversation.question),
            lambda chunk: chunk.text or "", lambda chunk: f"finish reason {_finish_reason(chunk)}",
            timeout=self.settings.timeout, retries=self.settings.retries, hint=self.hint)

    def act(self, conversation: Conversation) -> Iterator[str | ToolCall]:
        """The reply as it is generated, with ``conversation.tools`` offered as function
        declarations: a ``functionCall`` part ends it as a :class:`ToolCall`."""
        return stream_sdk(
            NAME, lambda seconds: self._chat(conversation, seconds, tools=True).send_message_stream(
                self._message(conversation)),
            _text_or_call, lambda chunk: f"finish reason {_finish_reason(chunk)}",
            timeout=self.settings.timeout, retries=self.settings.retries, hint=self.hint)


def _text_or_call(chunk: Any) -> str | ToolCall:
    """A streamed chunk's text, or the function the model calls in it (the first, if several:
    words in the same chunk are left out, the action says its own)."""
    try:
        parts = chunk.candidates[0].content.parts or []
    except (AttributeError, IndexError, TypeError):
        return ""
    for part in parts:
        call = getattr(part, "function_call", None)
        if call is not None and call.name:
            return ToolCall(str(call.name), dict(call.args or {}))
    return "".join(getattr(part, "text", None) or "" for part in parts if not getattr(part, "thought", False))


def _finish_reason(response: Any) -> str:
    try:
        return str(response.candidates[0].finish_reason)
    except (AttributeError, IndexError, TypeError):
        feedback = getattr(response, "prompt_feedback", None)
        return str(getattr(feedback, "block_reason", "") or "no candidates")


def gemini_client(name: str, settings: GeminiConnection) -> tuple[Any, Any]:
    """A ``google.genai.Client`` for the provider ``name`` (its section's connection settings),
    and the SDK's ``types`` module."""
    genai = import_sdk(name, "google.genai", package="google-genai", extra="google")
    types = genai.types
    # No retry_options: the SDK's retries ignore Retry-After and our turn deadline; ours do not.
    http_options = types.HttpOptions(api_version=settings.api_version or None)
    if settings.base_url:
        http_options.base_url = settings.base_url
    if settings.backend == "vertex":
        if not settings.project or not settings.location:
            # Without both, a custom base_url makes the SDK switch to an unauthenticated proxy mode.
            raise ProviderAuthError(f"{name}: Vertex AI needs [{name}] project and location", provider=name)
        hint = _VERTEX_HINT.replace("[gemini]", f"[{name}]")
        credentials = service_account_credentials(name, settings.credentials_file, hint)
        return genai.Client(vertexai=True, http_options=http_options, project=settings.project,
                            location=settings.location, credentials=credentials), types
    if not settings.api_key:
        raise ProviderAuthError(f"{name}: no API key ({_KEY_HINT.replace('[gemini]', f'[{name}]')})", provider=name)
    if http_options.api_version is None:
        http_options.api_version = "v1beta"
    return genai.Client(api_key=settings.api_key, http_options=http_options), types
