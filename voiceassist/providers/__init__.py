"""Speech-to-text, chat-model and text-to-speech providers.

Each vendor has one module per capability, behind the small Protocols in :mod:`.base`. The
config names a provider, or a fallback chain tried in order (``[tts] provider = openai, google,
espeak``); :func:`create` imports a module only when it is used, so an AGI process never pays for
SDKs it does not use.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
from typing import Any

from ..config import Config
from ..errors import ConfigError
from .chain import ProviderChain

# capability -> provider name -> "module:Class" (imported lazily). Each provider's settings live
# in the config section named by its module's NAME (e.g. [openai_tts]); those names work here too.
REGISTRY: dict[str, dict[str, str]] = {
    "stt": {
        "google": "voiceassist.providers.google_speech:GoogleSpeechToText",
        "openai": "voiceassist.providers.openai_stt:OpenAISpeechToText",
        "pocketsphinx": "voiceassist.providers.pocketsphinx_stt:PocketSphinxSpeechToText",
    },
    "llm": {
        "gemini": "voiceassist.providers.gemini_chat:GeminiChatModel",
        "openai": "voiceassist.providers.openai_chat:OpenAIChatModel",
        "llama_cpp": "voiceassist.providers.llama_cpp_chat:LlamaCppChatModel",
        "knowledge": "voiceassist.providers.knowledge_chat:KnowledgeChatModel",
    },
    "tts": {
        "openai": "voiceassist.providers.openai_tts:OpenAITextToSpeech",
        "openai_realtime": "voiceassist.providers.openai_realtime_tts:OpenAIRealtimeTextToSpeech",
        "google": "voiceassist.providers.google_tts:GoogleTextToSpeech",
        "piper": "voiceassist.providers.piper_tts:PiperTextToSpeech",
        "espeak": "voiceassist.providers.espeak_tts:EspeakTextToSpeech",
    },
}
ALIASES: dict[str, dict[str, str]] = {
    "stt": {"google_speech": "google", "openai_stt": "openai"},
    "llm": {"openai_chat": "openai"},
    "tts": {"openai_tts": "openai", "google_tts": "google"},
}

# OpenAI's announced shutdowns of /v1/audio/speech models (SDK 3.54 docstring, TTS guide).
OPENAI_SPEECH_SHUTDOWN = {
    "tts-1": datetime.date(2027, 1, 6), "tts-1-hd": datetime.date(2027, 1, 6),
    "gpt-4o-mini-tts": datetime.date(2027, 1, 6), "gpt-4o-mini-tts-2025-12-15": datetime.date(2027, 1, 6),
}


def _configured(config: Config, section: str, key: str, *env_vars: str) -> bool:
    return bool(config.section(section).get(key, "") or any(os.environ.get(v) for v in env_vars))


def _today() -> datetime.date:
    return datetime.date.today()


def openai_speech_retired(config: Config) -> bool:
    """Whether ``[openai_tts] model`` is past OpenAI's announced shutdown date."""
    shutdown = OPENAI_SPEECH_SHUTDOWN.get(config.section("openai_tts").get("model"))
    return shutdown is not None and _today() >= shutdown


def _auto(capability: str, config: Config) -> str:
    """``auto``: the cloud provider whose credentials are configured, else the local one (so a
    fresh install answers calls with no API key)."""
    has_openai = _configured(config, "openai", "api_key", "OPENAI_API_KEY")
    if capability == "stt":
        return "google" if _configured(config, "google_speech", "credentials_file",
                                       "GOOGLE_APPLICATION_CREDENTIALS") else "pocketsphinx"
    if capability == "llm":
        if (_configured(config, "gemini", "api_key", "GEMINI_API_KEY", "GOOGLE_API_KEY")
                or config.section("gemini").get("backend", "").lower() == "vertex"):
            return "gemini"
        # Offline, a knowledge file with questions and answers beats a tiny LLM on what it covers.
        from ..knowledge import faq, knowledge_text

        return "knowledge" if faq(knowledge_text(config)) else "llama_cpp"
    if capability == "tts":
        if has_openai or _configured(config, "openai_tts", "api_key"):
            # The design card's /v1/audio/speech while its model lives, then OpenAI's successor.
            return "openai_realtime" if openai_speech_retired(config) else "openai"
        return "piper" if importlib.util.find_spec("piper") is not None else "espeak"
    raise ConfigError(f"unknown capability {capability!r}")


def resolve_all(capability: str, config: Config) -> list[str]:
    """The provider names configured for ``capability``, in fallback order, ``auto`` resolved."""
    raw = config.section(capability).get("provider")
    names: list[str] = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        name = _auto(capability, config) if item == "auto" else ALIASES.get(capability, {}).get(item, item)
        if name not in REGISTRY.get(capability, {}):
            known = ", ".join(sorted(REGISTRY.get(capability, {})))
            raise ConfigError(f"[{capability}] provider = {item!r} is unknown; choose auto or one of: {known}")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError(f"[{capability}] provider is empty; choose auto or a provider name")
    return names


def resolve(capability: str, config: Config) -> str:
    """The first provider configured for ``capability``."""
    return resolve_all(capability, config)[0]


def create(capability: str, config: Config) -> Any:
    """Build the (first) provider configured for ``capability`` (``stt``, ``llm`` or ``tts``)."""
    return create_named(capability, resolve(capability, config), config)


def create_chain(capability: str, config: Config) -> ProviderChain:
    """The providers configured for ``capability``, tried in order (created when first needed)."""
    return ProviderChain(capability, resolve_all(capability, config),
                         lambda name: create_named(capability, name, config))


def create_named(capability: str, name: str, config: Config) -> Any:
    """Build the provider called ``name`` for ``capability``."""
    name = ALIASES.get(capability, {}).get(name, name)
    try:
        target = REGISTRY[capability][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(capability, {})))
        raise ConfigError(f"[{capability}] provider = {name!r} is unknown; choose auto or one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(config)
