"""Speech-to-text, chat-model and text-to-speech providers.

Each vendor has one module per capability, behind the small Protocols in :mod:`.base`. The
config names a provider (``[stt] provider = google``); :func:`create` imports its module only then,
so an AGI process never pays for SDKs it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config import Config
from ..errors import ConfigError

# capability -> provider name -> "module:Class" (imported lazily)
REGISTRY: dict[str, dict[str, str]] = {
    "stt": {"google": "voiceassist.providers.google_speech:GoogleSpeechToText"},
    "llm": {"gemini": "voiceassist.providers.gemini_chat:GeminiChatModel"},
    "tts": {"openai": "voiceassist.providers.openai_tts:OpenAITextToSpeech"},
}


def create(capability: str, config: Config) -> Any:
    """Build the provider configured for ``capability`` (``stt``, ``llm`` or ``tts``)."""
    name = config.section(capability).get("provider").strip().lower()
    try:
        target = REGISTRY[capability][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(capability, {})))
        raise ConfigError(f"[{capability}] provider = {name!r} is unknown; choose one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(config)
