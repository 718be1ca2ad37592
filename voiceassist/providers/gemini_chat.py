"""Chat model: Gemini through ``google-genai`` (the maintained SDK; google-generativeai is dead)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..config import Config
from ..knowledge import system_prompt
from ..errors import ProviderAuthError, ProviderBadResponse, ProviderError, ProviderNotInstalled
from ._errors import from_http_status, from_transport, with_retries
from .base import Exchange

NAME = "gemini"
_KEY_HINT = "set [gemini] api_key or GEMINI_API_KEY"


class GeminiChatModel:
    """Gemini ``generateContent`` with the call's earlier turns passed as chat history."""

    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.model = section.get("model")
        self.config = config
        self.max_output_tokens = section.get_int("max_output_tokens")
        self.temperature = section.get_float("temperature")
        self.thinking_budget = section.get("thinking_budget").strip()
        self.retries = section.get_int("retries")
        timeout_ms = int(section.get_float("timeout") * 1000)
        api_key = section.get("api_key") or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        if not api_key:
            raise ProviderAuthError(f"{NAME}: no API key ({_KEY_HINT})", provider=NAME)
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise ProviderNotInstalled("google-genai is not installed: pip install 'voiceassist[google]'", provider=NAME) from None
        self._types = types
        # timeout is in milliseconds; no retry_options: the SDK would retry unboundedly slow.
        http_options = types.HttpOptions(timeout=timeout_ms, api_version=section.get("api_version") or None)
        base_url = section.get("base_url")
        if base_url:
            http_options.base_url = base_url
        self._client = genai.Client(api_key=api_key, http_options=http_options)

    def reply(self, history: Sequence[Exchange], question: str) -> str:
        types = self._types
        past: list[Any] = []
        for exchange in history:
            past.append(types.Content(role="user", parts=[types.Part(text=exchange.question)]))
            past.append(types.Content(role="model", parts=[types.Part(text=exchange.answer)]))
        generation: dict[str, Any] = {
            "system_instruction": system_prompt(self.config),
            "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature,
        }
        if self.thinking_budget != "":
            generation["thinking_config"] = types.ThinkingConfig(thinking_budget=int(self.thinking_budget))
        config = types.GenerateContentConfig(**generation)

        def call() -> Any:
            try:
                chat = self._client.chats.create(model=self.model, config=config, history=past)
                return chat.send_message(question)
            except Exception as exc:
                raise _map_error(exc) from None

        response = with_retries(call, provider=NAME, retries=self.retries)
        text = response.text  # None when blocked, or when thinking used up the token budget
        if not text or not text.strip():
            reason = ""
            try:
                reason = str(response.candidates[0].finish_reason)
            except (AttributeError, IndexError, TypeError):
                feedback = getattr(response, "prompt_feedback", None)
                reason = str(getattr(feedback, "block_reason", "") or "no candidates")
            raise ProviderBadResponse(f"{NAME}: empty reply (finish reason {reason})", provider=NAME)
        return text.strip()


def _map_error(exc: Exception) -> ProviderError:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and hasattr(exc, "status"):  # google.genai.errors.APIError
        if code == 400 and "API key" in str(getattr(exc, "message", "")):
            return ProviderAuthError(f"{NAME}: API key rejected ({_KEY_HINT})", provider=NAME)
        return from_http_status(NAME, code, f"{code} {getattr(exc, 'status', '')} {getattr(exc, 'message', '')}",
                                hint=_KEY_HINT)
    mapped = from_transport(NAME, exc)
    return mapped or ProviderError(f"{NAME}: {type(exc).__name__}: {exc}", provider=NAME)
