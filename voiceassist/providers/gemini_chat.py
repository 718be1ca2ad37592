"""Chat model: Gemini through ``google-genai`` (the maintained SDK; google-generativeai is dead).

Two backends with the same model family: the Gemini API with an API key (default), or Vertex AI
with a service account (``[gemini] backend = vertex`` plus an explicit project and location).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..config import Config, Section
from ..deadline import budget
from ..errors import ProviderAuthError, ProviderBadResponse, ProviderNotInstalled
from ..knowledge import system_prompt
from ._errors import map_sdk_error, stream_with_retries, with_retries
from .base import Exchange
from .google_credentials import service_account_credentials

NAME = "gemini"
_KEY_HINT = "set [gemini] api_key or GEMINI_API_KEY"
_VERTEX_HINT = "set [gemini] credentials_file or GOOGLE_APPLICATION_CREDENTIALS, project and location"


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
        self.timeout = section.get_float("timeout")
        self.vertex = section.get("backend").strip().lower() == "vertex"
        self.hint = _VERTEX_HINT if self.vertex else _KEY_HINT
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise ProviderNotInstalled("google-genai is not installed: pip install 'voiceassist[google]'", provider=NAME) from None
        self._types = types
        # No retry_options: the SDK's retries ignore Retry-After and our turn deadline; ours do not.
        http_options = types.HttpOptions(api_version=section.get("api_version") or None)
        if section.get("base_url"):
            http_options.base_url = section.get("base_url")
        if self.vertex:
            self._client = genai.Client(vertexai=True, http_options=http_options, **_vertex_settings(section))
        else:
            api_key = section.get("api_key") or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
            if not api_key:
                raise ProviderAuthError(f"{NAME}: no API key ({_KEY_HINT})", provider=NAME)
            if http_options.api_version is None:
                http_options.api_version = "v1beta"
            self._client = genai.Client(api_key=api_key, http_options=http_options)

    def _chat(self, history: Sequence[Exchange]) -> Any:
        types = self._types
        past: list[Any] = []
        for exchange in history:
            past.append(types.Content(role="user", parts=[types.Part(text=exchange.question)]))
            past.append(types.Content(role="model", parts=[types.Part(text=exchange.answer)]))
        generation: dict[str, Any] = {
            "system_instruction": system_prompt(self.config),
            "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            # Per request, so each call gets what is left of the turn (milliseconds).
            "http_options": types.HttpOptions(timeout=int(budget(self.timeout, NAME) * 1000)),
        }
        if self.thinking_budget != "":
            generation["thinking_config"] = types.ThinkingConfig(thinking_budget=int(self.thinking_budget))
        return self._client.chats.create(model=self.model, config=types.GenerateContentConfig(**generation),
                                         history=past)

    def reply(self, history: Sequence[Exchange], question: str) -> str:
        def call() -> Any:
            try:
                return self._chat(history).send_message(question)
            except Exception as exc:
                raise map_sdk_error(NAME, exc, hint=self.hint) from None

        response = with_retries(call, provider=NAME, retries=self.retries)
        text = response.text  # None when blocked, or when thinking used up the token budget
        if not text or not text.strip():
            raise ProviderBadResponse(f"{NAME}: empty reply (finish reason {_finish_reason(response)})", provider=NAME)
        return text.strip()

    def stream(self, history: Sequence[Exchange], question: str) -> Iterator[str]:
        """The reply as it is generated (``streamGenerateContent`` over server-sent events)."""
        return stream_with_retries(
            lambda: self._chat(history).send_message_stream(question), lambda chunk: chunk.text or "",
            lambda chunk: f"finish reason {_finish_reason(chunk)}", provider=NAME, retries=self.retries,
            hint=self.hint)


def _vertex_settings(section: Section) -> dict[str, Any]:
    project, location = section.get("project"), section.get("location")
    if not project or not location:
        # Without both, a custom base_url makes the SDK switch to an unauthenticated proxy mode.
        raise ProviderAuthError(f"{NAME}: Vertex AI needs [gemini] project and location", provider=NAME)
    credentials = service_account_credentials(NAME, section.get("credentials_file"), _VERTEX_HINT)
    return {"project": project, "location": location, "credentials": credentials}


def _finish_reason(response: Any) -> str:
    try:
        return str(response.candidates[0].finish_reason)
    except (AttributeError, IndexError, TypeError):
        feedback = getattr(response, "prompt_feedback", None)
        return str(getattr(feedback, "block_reason", "") or "no candidates")
