"""One ``openai.OpenAI`` client per provider section, with our timeout and no SDK retries.

Every OpenAI-speaking provider (``openai_tts``, ``openai_chat``, ``openai_stt``,
``openai_realtime``) reads ``api_key`` and ``base_url`` from its own section, then from
``[openai]``, then from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``: one key serves them all, and an
OpenAI-compatible server (Ollama, llama.cpp's server, vLLM) is one ``base_url`` away.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import Config
from ..errors import ProviderAuthError, ProviderNotInstalled


def key_hint(section_name: str) -> str:
    return f"set [{section_name}] api_key, [openai] api_key or OPENAI_API_KEY"


def setting(config: Config, section_name: str, key: str, env_var: str) -> str:
    return (config.section(section_name).get(key, "") or config.section("openai").get(key, "")
            or os.environ.get(env_var, ""))


def openai_client(config: Config, section_name: str, *, timeout: float) -> Any:
    """An ``openai.OpenAI`` for ``section_name``.

    ``max_retries=0``: our retry loop decides (the SDK would retry for up to 8 s of back-off and
    knows nothing of the turn's deadline); ``timeout`` replaces the SDK's 600 s default.
    """
    api_key = setting(config, section_name, "api_key", "OPENAI_API_KEY")
    if not api_key:
        raise ProviderAuthError(f"{section_name}: no API key ({key_hint(section_name)})", provider=section_name)
    try:
        import openai
    except ImportError:
        raise ProviderNotInstalled("openai is not installed: pip install 'voiceassist[openai]'",
                                   provider=section_name) from None
    return openai.OpenAI(api_key=api_key, base_url=setting(config, section_name, "base_url", "OPENAI_BASE_URL") or None,
                         timeout=timeout, max_retries=0)
