"""Which providers exist, what ``auto`` picks, and how a provider is built from the config.

Adding a provider is one module (its settings dataclass and its class) plus one line in
:data:`PROVIDERS`. A provider's name is its config section's name and the name stored with each
turn it served (``[tts] provider = google_tts`` reads ``[google_tts]`` and stores ``google_tts``);
the older short names (``google``, ``openai``) are still accepted in the provider lists.

Settings a provider shares with others are declared here, not read by the provider: an OpenAI
provider's ``api_key`` falls back to ``[openai] api_key`` and then to ``OPENAI_API_KEY``, Google
Text-to-Speech's ``credentials_file`` to Google Speech's. Secrets are declared in the settings
dataclasses (``setting(..., secret=True)``) and with their environment variables here, so log
redaction finds every one of them.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import CORE_SECTIONS, Config, load_config, parse_section
from ..errors import ConfigError
from ..text.knowledge import faq
from ..text.languages import is_english, unknown_answer
from ..types import Capability
from .base import ProviderContext
from .chain import ProviderChain
from .openai_client import ENVIRONMENT as OPENAI_ENVIRONMENT
from .openai_client import SHARED_SETTINGS as OPENAI_SHARED
from .openai_client import OpenAISettings

_GOOGLE_CREDENTIALS = {"credentials_file": ("GOOGLE_APPLICATION_CREDENTIALS",)}
_GEMINI_ENVIRONMENT = {"api_key": ("GEMINI_API_KEY", "GOOGLE_API_KEY"), **_GOOGLE_CREDENTIALS}
# [gemini_live] reaches Google as [gemini] does unless it says otherwise.
_GEMINI_SHARED = {key: "gemini" for key in ("backend", "api_key", "project", "location", "credentials_file",
                                            "base_url", "api_version")}


@dataclass(frozen=True)
class ProviderSpec:
    """One provider: its name (= config section = stored name), what it does, where its class is
    (imported only when the provider is used), older names for it, and where its settings fall
    back to: another section (``shared``) or environment variables."""

    name: str
    capability: Capability
    target: str
    aliases: tuple[str, ...] = ()
    shared: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


STT, LLM, TTS, ENGINE = Capability.STT, Capability.LLM, Capability.TTS, Capability.ENGINE
PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec("google_speech", STT, "google_speech:GoogleSpeechToText", ("google",), environment=_GOOGLE_CREDENTIALS),
    ProviderSpec("openai_stt", STT, "openai_stt:OpenAISpeechToText", ("openai",), OPENAI_SHARED, OPENAI_ENVIRONMENT),
    ProviderSpec("moonshine", STT, "moonshine:MoonshineSpeechToText"),
    ProviderSpec("pocketsphinx", STT, "pocketsphinx:PocketSphinxSpeechToText"),
    ProviderSpec("gemini", LLM, "gemini:GeminiChatModel", environment=_GEMINI_ENVIRONMENT),
    ProviderSpec("openai_chat", LLM, "openai_chat:OpenAIChatModel", ("openai",), OPENAI_SHARED, OPENAI_ENVIRONMENT),
    ProviderSpec("knowledge", LLM, "knowledge:KnowledgeChatModel"),
    ProviderSpec("llama_cpp", LLM, "llama_cpp:LlamaCppChatModel"),
    ProviderSpec("openai_tts", TTS, "openai_tts:OpenAITextToSpeech", ("openai",), OPENAI_SHARED, OPENAI_ENVIRONMENT),
    ProviderSpec("openai_realtime", TTS, "openai_realtime:OpenAIRealtimeTextToSpeech", (), OPENAI_SHARED,
                 OPENAI_ENVIRONMENT),
    ProviderSpec("google_tts", TTS, "google_tts:GoogleTextToSpeech", ("google",),
                 {"credentials_file": "google_speech"}, _GOOGLE_CREDENTIALS),
    ProviderSpec("piper", TTS, "piper:PiperTextToSpeech"),
    ProviderSpec("espeak", TTS, "espeak:EspeakTextToSpeech"),
    # Real-time calls only ([live] engine; the cascade of the three above is the default).
    ProviderSpec("ai_websocket", ENGINE, "ai_websocket:AIWebSocketEngine", ("websocket",)),
    # Shares [openai_realtime] (model, voice, key) with the Realtime text-to-speech above.
    ProviderSpec("openai_realtime", ENGINE, "openai_realtime_engine:OpenAIRealtimeEngine", (), OPENAI_SHARED,
                 OPENAI_ENVIRONMENT),
    ProviderSpec("gemini_live", ENGINE, "gemini_live:GeminiLiveEngine", (), _GEMINI_SHARED, _GEMINI_ENVIRONMENT),
)
# Sections of settings several providers share.
SHARED_SECTIONS: dict[str, type] = {"openai": OpenAISettings}

# OpenAI's announced shutdowns of /v1/audio/speech models (SDK 3.54 docstring, TTS guide).
OPENAI_SPEECH_SHUTDOWN = {
    "tts-1": datetime.date(2027, 1, 6), "tts-1-hd": datetime.date(2027, 1, 6),
    "gpt-4o-mini-tts": datetime.date(2027, 1, 6), "gpt-4o-mini-tts-2025-12-15": datetime.date(2027, 1, 6),
}


def spec(capability: Capability | str, name: str) -> ProviderSpec:
    """The provider called ``name`` (or one of its older names) for ``capability``."""
    capability = Capability(capability)
    name = name.strip().lower()
    for candidate in PROVIDERS:
        if candidate.capability is capability and name in (candidate.name, *candidate.aliases):
            return candidate
    known = ", ".join(p.name for p in PROVIDERS if p.capability is capability)
    raise ConfigError(f"[{capability.value}] provider = {name!r} is unknown; choose auto or one of: {known}")


def provider_class(provider: ProviderSpec) -> Any:
    module_name, _, class_name = provider.target.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module_name}"), class_name)


def sections() -> dict[str, type]:
    """Every config section and its settings dataclass: the core ones, then each provider's."""
    found: dict[str, type] = dict(CORE_SECTIONS)
    found.update(SHARED_SECTIONS)
    for provider in PROVIDERS:
        found[provider.name] = provider_class(provider).Settings
    return found


def load_full_config(path: str | os.PathLike[str] | None = None, *, strict: bool = True,
                     environ: Mapping[str, str] | None = None,
                     overrides: Mapping[str, Mapping[str, str]] | None = None) -> Config:
    """:func:`~voiceassist.config.load_config` checking every provider's section too (what the
    entry points use: a bad value in any section is found when the file is loaded)."""
    return load_config(path, environ, strict=strict, sections=sections(), overrides=overrides)


def settings(provider: ProviderSpec, config: Config) -> Any:
    """The provider's typed settings: its section, with the shared and environment fallbacks for
    settings it leaves empty. A bad value is a :class:`ConfigError` naming it."""
    raw = dict(config.sections.get(provider.name, {}))
    # A fallback that is empty too leaves the setting out (its default applies).
    for key, section in provider.shared.items():
        if not raw.get(key) and (value := config.sections.get(section, {}).get(key, "")):
            raw[key] = value
    for key, variables in provider.environment.items():
        if not raw.get(key) and (value := next((os.environ[v] for v in variables if os.environ.get(v)), "")):
            raw[key] = value
    source = str(config.path) if config.path else "built-in defaults"
    values, problems, _ = parse_section(provider_class(provider).Settings, provider.name, raw, source)
    if problems:
        raise ConfigError("\n".join(problems))
    return values


def context(config: Config, alternative_languages: tuple[str, ...] = ()) -> ProviderContext:
    """What every provider of ``config``'s chains shares: the call's language (a config made by
    :meth:`~voiceassist.config.Config.for_language` is one language's), the knowledge file,
    ffmpeg and what to say to a question nobody can answer, in that language."""
    general = config.general
    return ProviderContext(language=general.language, knowledge_file=general.knowledge_file,
                           ffmpeg=config.audio.ffmpeg,
                           unknown_answer=unknown_answer(config.llm.unknown_answer, general.language),
                           alternative_languages=alternative_languages)


def _today() -> datetime.date:
    return datetime.date.today()


def openai_speech_retired(config: Config) -> bool:
    """Whether ``[openai_tts] model`` is past OpenAI's announced shutdown date."""
    shutdown = OPENAI_SPEECH_SHUTDOWN.get(settings(spec(TTS, "openai_tts"), config).model)
    return shutdown is not None and _today() >= shutdown


def _auto(capability: Capability, config: Config) -> list[str]:
    """``auto``: the cloud provider whose credentials are configured, else the local one (so a
    fresh install answers calls with no API key)."""
    def configured(name: str, key: str) -> bool:
        return bool(getattr(settings(spec(capability, name), config), key))

    language = config.general.language
    if capability is STT:
        if configured("google_speech", "credentials_file"):
            return ["google_speech"]
        if not is_english(language):
            raise ConfigError(f"[stt] provider = auto: no offline recogniser hears {language} calls (Moonshine and "
                              "PocketSphinx are English); set [google_speech] credentials_file, or "
                              f"[stt.{language}] provider = openai_stt with an OpenAI key")
        # Moonshine hears callers' own words; PocketSphinx only the knowledge file's wording.
        return ["moonshine" if importlib.util.find_spec("moonshine_voice") is not None else "pocketsphinx"]
    if capability is LLM:
        if configured("gemini", "api_key") or settings(spec(LLM, "gemini"), config).backend == "vertex":
            return ["gemini"]
        # Offline, a knowledge file with questions and answers beats a tiny LLM on what it covers.
        return ["knowledge"] if faq(context(config).knowledge()) else ["llama_cpp"]
    if configured("openai_tts", "api_key"):
        # The design card's /v1/audio/speech while its model lives, then OpenAI's successor.
        return ["openai_realtime" if openai_speech_retired(config) else "openai_tts"]
    # The bundled Piper voice speaks English; espeak-ng speaks the other languages (a Piper voice
    # for one is [piper.<language>] model_path).
    piper = importlib.util.find_spec("piper") is not None
    if piper and (is_english(language) or configured("piper", "model_path")):
        return ["piper"]
    return ["espeak"]


def resolve_all(capability: Capability | str, config: Config) -> list[str]:
    """The provider names configured for ``capability``, in fallback order, ``auto`` resolved
    and the knowledge model followed by its ``fallback``."""
    capability = Capability(capability)
    names: list[str] = []
    for item in config.section(capability.value).get("provider").split(","):
        if not item.strip():
            continue
        found = _auto(capability, config) if item.strip().lower() == "auto" else [spec(capability, item).name]
        for name in found:
            if name not in names:
                names.append(name)
            if name == "knowledge":
                fallback = settings(spec(LLM, "knowledge"), config).fallback
                if fallback != "none" and spec(LLM, fallback).name not in names:
                    names.append(spec(LLM, fallback).name)
    if not names:
        raise ConfigError(f"[{capability.value}] provider is empty; choose auto or a provider name")
    return names


def resolve(capability: Capability | str, config: Config) -> str:
    """The first provider configured for ``capability``."""
    return resolve_all(capability, config)[0]


def create_named(capability: Capability | str, name: str, config: Config,
                 alternative_languages: tuple[str, ...] = ()) -> Any:
    """Build the provider called ``name`` for ``capability`` from ``config``."""
    provider = spec(capability, name)
    return provider_class(provider)(settings(provider, config), context(config, alternative_languages))


def create(capability: Capability | str, config: Config) -> Any:
    """Build the (first) provider configured for ``capability``."""
    return create_named(capability, resolve(capability, config), config)


def create_chain(capability: Capability | str, config: Config,
                 alternative_languages: tuple[str, ...] = ()) -> ProviderChain:
    """The providers configured for ``capability``, tried in order (each created when first
    needed); ``alternative_languages``: what else the caller may be speaking (a recogniser that
    can tell offers them)."""
    capability = Capability(capability)
    return ProviderChain(capability.value, resolve_all(capability, config),
                         lambda name: create_named(capability.value, name, config, alternative_languages))


def secret_values(config: Config) -> list[str]:
    """Every configured secret (settings declared secret, in any section, and the environment
    variables they fall back to): what log redaction hides."""
    found: list[str] = []
    for name, cls in sections().items():
        for setting in dataclasses.fields(cls):
            if setting.metadata.get("secret") and config.sections.get(name, {}).get(setting.name):
                found.append(config.sections[name][setting.name])
    for provider in PROVIDERS:
        cls = provider_class(provider).Settings
        secret = {s.name for s in dataclasses.fields(cls) if s.metadata.get("secret")}
        for key, variables in provider.environment.items():
            if key in secret:
                found += [os.environ[v] for v in variables if os.environ.get(v)]
    return sorted(set(found), key=len, reverse=True)
