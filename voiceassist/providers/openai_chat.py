"""Chat model: OpenAI-compatible chat completions (``openai`` SDK, configurable ``base_url``).

The same module serves OpenAI itself, Ollama (``http://localhost:11434/v1``), llama.cpp's
``llama-server`` and vLLM: they all speak ``POST /v1/chat/completions``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import setting
from ..errors import ProviderBadResponse
from ..types import Conversation
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


def _delta(chunk: Any) -> tuple[str, str | None]:
    if not chunk.choices:  # e.g. the usage-only chunk some servers send last
        return "", None
    choice = chunk.choices[0]
    return (choice.delta.content or "") if choice.delta else "", choice.finish_reason
