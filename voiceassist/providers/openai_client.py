"""One ``openai.OpenAI`` client per provider, with our timeout and no SDK retries.

Every OpenAI-speaking provider (``openai_tts``, ``openai_chat``, ``openai_stt``,
``openai_realtime``) has ``api_key`` and ``base_url`` in its own section, falling back to
``[openai]`` and then to ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` (the registry fills those in):
one key serves them all, and an OpenAI-compatible server (Ollama, llama.cpp's server, vLLM) is
one ``base_url`` away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from ..config import setting
from ..errors import ProviderAuthError
from .base import Provider, RequestSettings, import_sdk

# Settings of every OpenAI provider that fall back to the shared [openai] section, then to these.
SHARED_SETTINGS = {"api_key": "openai", "base_url": "openai"}
ENVIRONMENT = {"api_key": ("OPENAI_API_KEY",), "base_url": ("OPENAI_BASE_URL",)}


@dataclass(frozen=True)
class OpenAISettings:
    """``[openai]``: shared by every OpenAI provider unless its own section sets them."""

    api_key: str = setting("", secret=True)   # else OPENAI_API_KEY
    base_url: str = ""            # else OPENAI_BASE_URL, else https://api.openai.com/v1


@dataclass(frozen=True)
class OpenAIConnection(RequestSettings):
    """Where an OpenAI provider connects, in its own section (empty: ``[openai]``'s)."""

    api_key: str = setting("", secret=True)
    base_url: str = ""            # e.g. http://127.0.0.1:11434/v1 (Ollama), llama-server, vLLM


C = TypeVar("C", bound=OpenAIConnection)


def key_hint(section_name: str) -> str:
    return f"set [{section_name}] api_key, [openai] api_key or OPENAI_API_KEY"


class OpenAIProvider(Provider[C]):
    """An OpenAI-speaking provider: its client is made from its connection settings."""

    def setup(self) -> None:
        self.hint = key_hint(self.name)
        self._client = openai_client(self.name, self.settings.api_key, self.settings.base_url,
                                     timeout=self.settings.timeout)

    def close(self) -> None:
        self._client.close()


def openai_client(provider: str, api_key: str, base_url: str, *, timeout: float) -> Any:
    """An ``openai.OpenAI`` for ``provider``.

    ``max_retries=0``: our retry loop decides (the SDK would retry for up to 8 s of back-off and
    knows nothing of the turn's deadline); ``timeout`` replaces the SDK's 600 s default.
    """
    if not api_key:
        raise ProviderAuthError(f"{provider}: no API key ({key_hint(provider)})", provider=provider)
    openai = import_sdk(provider, "openai", package="openai", extra="openai")
    return openai.OpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0)
