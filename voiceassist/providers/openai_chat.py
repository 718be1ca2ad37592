"""Chat model: OpenAI-compatible chat completions (``openai`` SDK, configurable ``base_url``).

The same module serves OpenAI itself, Ollama (``http://localhost:11434/v1``), llama.cpp's
``llama-server`` and vLLM: they all speak ``POST /v1/chat/completions``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..config import Config
from ..deadline import budget
from ..errors import ProviderBadResponse
from ..knowledge import system_prompt
from ._errors import map_sdk_error, stream_with_retries, with_retries
from .base import Exchange
from .openai_client import key_hint, openai_client

NAME = "openai_chat"


class OpenAIChatModel:
    """``chat.completions.create`` with the system prompt and the call's history as messages."""

    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.config = config
        self.model = section.get("model")
        self.max_tokens = section.get_int("max_tokens")
        self.temperature = section.get_float("temperature") if section.get("temperature").strip() else None
        self.retries = section.get_int("retries")
        self.timeout = section.get_float("timeout")
        # OpenAI's newer models take max_completion_tokens; most compatible servers only max_tokens.
        self.token_field = section.get("token_field")
        self.hint = key_hint(NAME)
        self._client = openai_client(config, NAME, timeout=self.timeout)

    def _request(self, history: Sequence[Exchange], question: str) -> dict[str, Any]:
        messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt(self.config)}]
        for exchange in history:
            messages.append({"role": "user", "content": exchange.question})
            messages.append({"role": "assistant", "content": exchange.answer})
        messages.append({"role": "user", "content": question})
        request: dict[str, Any] = {"model": self.model, "messages": messages, self.token_field: self.max_tokens}
        if self.temperature is not None:
            request["temperature"] = self.temperature
        return request

    def reply(self, history: Sequence[Exchange], question: str) -> str:
        request = self._request(history, question)

        def call() -> Any:
            try:
                return self._client.chat.completions.create(**request, timeout=budget(self.timeout, NAME))
            except Exception as exc:
                raise map_sdk_error(NAME, exc, hint=self.hint) from None

        completion = with_retries(call, provider=NAME, retries=self.retries)
        try:
            choice = completion.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, TypeError):
            raise ProviderBadResponse(f"{NAME}: no choices in the reply", provider=NAME) from None
        if not text or not text.strip():
            raise ProviderBadResponse(f"{NAME}: empty reply (finish reason {choice.finish_reason})", provider=NAME)
        return text.strip()

    def stream(self, history: Sequence[Exchange], question: str) -> Iterator[str]:
        """The reply as it is generated (server-sent events ending in ``data: [DONE]``)."""
        request = self._request(history, question)

        return stream_with_retries(
            lambda: self._client.chat.completions.create(**request, stream=True, timeout=budget(self.timeout, NAME)),
            lambda chunk: _delta(chunk)[0], lambda chunk: f"finish reason {chunk and _delta(chunk)[1]}",
            provider=NAME, retries=self.retries, hint=self.hint)


def _delta(chunk: Any) -> tuple[str, str | None]:
    if not chunk.choices:  # e.g. the usage-only chunk some servers send last
        return "", None
    choice = chunk.choices[0]
    return (choice.delta.content or "") if choice.delta else "", choice.finish_reason
