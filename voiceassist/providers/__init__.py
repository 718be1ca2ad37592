"""Speech-to-text, chat-model and text-to-speech providers.

One module per vendor per capability (``google_speech``, ``gemini``, ``openai_tts`` ...), each
with its typed settings beside its class, behind the Protocols of :mod:`.base`; :mod:`.registry`
lists them, picks for ``auto`` and builds them from the config; :mod:`.chain` tries a fallback
chain in order (``[tts] provider = openai_tts, google_tts, espeak``). A provider's module, and its
SDK, are imported only when it is used, so an AGI process never pays for SDKs it does not use.
"""

from __future__ import annotations

from .chain import ProviderChain
from .registry import (
    PROVIDERS,
    create,
    create_chain,
    create_named,
    load_full_config,
    openai_speech_retired,
    resolve,
    resolve_all,
    secret_values,
    sections,
)

__all__ = ["PROVIDERS", "ProviderChain", "create", "create_chain", "create_named", "load_full_config",
           "openai_speech_retired", "resolve", "resolve_all", "secret_values", "sections"]
