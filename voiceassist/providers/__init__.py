"""Speech-to-text, chat-model and text-to-speech providers.

Each vendor has one module per capability, behind the small Protocols in :mod:`.base`. The
config names a provider (``[stt] provider = google``); :func:`create` imports its module only then,
so an AGI process never pays for SDKs it does not use.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

from ..config import Config
from ..errors import ConfigError

# capability -> provider name -> "module:Class" (imported lazily)
REGISTRY: dict[str, dict[str, str]] = {
    "stt": {
        "google": "voiceassist.providers.google_speech:GoogleSpeechToText",
        "pocketsphinx": "voiceassist.providers.pocketsphinx_stt:PocketSphinxSpeechToText",
    },
    "llm": {
        "gemini": "voiceassist.providers.gemini_chat:GeminiChatModel",
        "llama_cpp": "voiceassist.providers.llama_cpp_chat:LlamaCppChatModel",
        "knowledge": "voiceassist.providers.knowledge_chat:KnowledgeChatModel",
    },
    "tts": {
        "openai": "voiceassist.providers.openai_tts:OpenAITextToSpeech",
        "piper": "voiceassist.providers.piper_tts:PiperTextToSpeech",
        "espeak": "voiceassist.providers.espeak_tts:EspeakTextToSpeech",
    },
}


def _configured(config: Config, section: str, key: str, *env_vars: str) -> bool:
    return bool(config.section(section).get(key, "") or any(os.environ.get(v) for v in env_vars))


def resolve(capability: str, config: Config) -> str:
    """The provider name for ``capability``; ``auto`` picks the cloud provider whose credentials
    are configured, else the local one (so a fresh install answers calls with no API key)."""
    name = config.section(capability).get("provider").strip().lower()
    if name != "auto":
        return name
    if capability == "stt":
        return "google" if _configured(config, "google_speech", "credentials_file",
                                       "GOOGLE_APPLICATION_CREDENTIALS") else "pocketsphinx"
    if capability == "llm":
        if _configured(config, "gemini", "api_key", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
            return "gemini"
        # Offline, a knowledge file with questions and answers beats a tiny LLM on what it covers.
        from ..knowledge import faq, knowledge_text

        return "knowledge" if faq(knowledge_text(config)) else "llama_cpp"
    if capability == "tts":
        if _configured(config, "openai_tts", "api_key", "OPENAI_API_KEY"):
            return "openai"
        return "piper" if importlib.util.find_spec("piper") is not None else "espeak"
    return name


def create(capability: str, config: Config) -> Any:
    """Build the provider configured for ``capability`` (``stt``, ``llm`` or ``tts``)."""
    return create_named(capability, resolve(capability, config), config)


def create_named(capability: str, name: str, config: Config) -> Any:
    """Build the provider called ``name`` for ``capability``."""
    try:
        target = REGISTRY[capability][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(capability, {})))
        raise ConfigError(f"[{capability}] provider = {name!r} is unknown; choose auto or one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(config)
