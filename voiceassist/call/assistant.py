"""The Assistant: the checked configuration, the provider chains and the journal, created once
and shared by the calls of a process.

Process AGI builds one per call; the FastAGI server builds one and shares it across threads, so
the SDK clients (and their connection pools) are created once. :func:`start_assistant` is what an
entry point calls: it also sets up this process's log, with every configured secret hidden.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .. import providers
from ..config import Config
from ..errors import ConfigError, VoiceAssistError
from ..logs import configure_logging, logger
from ..providers.chain import ProviderChain
from ..storage.journal import Journal
from ..types import Capability

if TYPE_CHECKING:
    from ..events.live import LiveFeed
    from ..events.outbox import Outbox

CAPABILITIES = (Capability.STT, Capability.LLM, Capability.TTS)


class Assistant:
    """The config, and the provider chains and journal built from it when first needed (thread-safe)."""

    def __init__(self, config: Config, *, shares_with: Assistant | None = None,
                 alternative_languages: tuple[str, ...] = ()) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._chains: dict[Capability, ProviderChain] = {}
        self._journal: Journal | None = None
        self._outbox: Outbox | None = None
        self._outbox_failed = False
        self._live_feed: LiveFeed | None = None
        # The assistant of the config's main language: a language's assistant shares its journal,
        # outbox and live feed (one database, one console), and has provider chains of its own.
        self._main = shares_with or self
        self._languages: dict[str, Assistant] = {}
        self._detecting: dict[str, Assistant] = {}
        self.alternative_languages = alternative_languages  # what its recogniser also listens for

    def in_language(self, channel_language: str) -> Assistant:
        """The assistant for a call whose channel language is ``channel_language`` (Asterisk's
        CHANNEL(language), already checked): the providers, prompts and settings of the configured
        language it picks (:meth:`~voiceassist.config.Config.language_for`); made once per language."""
        main = self._main
        tag = main.config.language_for(channel_language)
        if tag == main.config.general.language and not main.config.language_sections(tag):
            return main
        with main._lock:
            if tag not in main._languages:
                main._languages[tag] = Assistant(main.config.for_language(tag), shares_with=main)
            return main._languages[tag]

    def detecting(self) -> Assistant:
        """This language's assistant, with a recogniser that also listens for the other configured
        languages and says which it heard (``[general] detect_language``, the first question)."""
        main, language = self._main, self.config.general.language
        others = tuple(tag for tag in (main.config.general.language, *main.config.general.languages) if tag != language)
        if not others:
            return self
        with main._lock:
            if language not in main._detecting:
                main._detecting[language] = Assistant(self.config, shares_with=main,
                                                      alternative_languages=tuple(dict.fromkeys(others)))
            return main._detecting[language]

    def languages(self) -> list[Assistant]:
        """This assistant and one per other configured language."""
        general = self.config.general
        return [self] + [self.in_language(tag) for tag in general.languages if tag != general.language]

    def check_providers(self) -> None:
        """Raise :class:`ConfigError` when a capability names a provider that does not exist, in
        any configured language (the providers themselves are not created: that needs their SDKs
        and credentials)."""
        problems = []
        for assistant in self.languages():
            for capability in CAPABILITIES:
                try:
                    providers.resolve_all(capability, assistant.config)
                except ConfigError as exc:
                    problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(dict.fromkeys(problems)))

    def providers(self, capability: Capability | str) -> ProviderChain:
        """The providers configured for ``capability``, as a fallback chain (raises
        ``ConfigError`` for an unknown name; the providers themselves are built on first use)."""
        capability = Capability(capability)
        with self._lock:
            if capability not in self._chains:
                self._chains[capability] = providers.create_chain(capability, self.config, self.alternative_languages)
            return self._chains[capability]

    def prepare(self, every_provider: bool = True, every_language: bool = True) -> list[str]:
        """Create the providers (SDK imports, clients) now instead of during the first call:
        every provider of each chain, or only the first; of every configured language, or only
        this assistant's. Returns the problems found, one line each."""
        problems = []
        for assistant in self.languages() if every_language else [self]:
            language = assistant.config.general.language
            where = "" if assistant is self else f" ({language} calls)"
            for capability in CAPABILITIES:
                try:
                    chain = assistant.providers(capability)
                except VoiceAssistError as exc:
                    problems.append(f"{capability} providers{where} not configured: {exc}")
                    continue
                for name in chain.names if every_provider else chain.names[:1]:
                    try:
                        chain.provider(name)
                    except VoiceAssistError as exc:
                        problems.append(f"{capability} provider {name}{where} not ready: {exc}")
        return problems

    def journal(self) -> Journal:
        """The journal: the database, with the spool behind it (SQLAlchemy is imported on first use)."""
        if self._main is not self:
            return self._main.journal()
        with self._lock:
            if self._journal is None:
                self._journal = Journal(self.config)
            return self._journal

    def live_feed(self) -> LiveFeed:
        """Where calls tell the web console what happens ([web] live_socket)."""
        if self._main is not self:
            return self._main.live_feed()
        with self._lock:
            if self._live_feed is None:
                from ..events.live import LiveFeed

                self._live_feed = LiveFeed(self.config.web.live_socket)
            return self._live_feed

    def outbox(self) -> Outbox | None:
        """The webhook events' outbox ([webhooks] outbox_dir), made on first use; None (logged
        once) when it cannot be."""
        if self._main is not self:
            return self._main.outbox()
        with self._lock:
            if self._outbox is None and not self._outbox_failed:
                from ..events.outbox import Outbox

                try:
                    self._outbox = Outbox(Path(self.config.webhooks.outbox_dir))
                except Exception as exc:
                    self._outbox_failed = True
                    logger.error("[EVENTS] the outbox %s cannot be used: %s", self.config.webhooks.outbox_dir, exc)
            return self._outbox


def start_assistant(config: Config) -> Assistant:
    """What an entry point (a command, process AGI, the FastAGI server) starts with: this
    process's log set up (every configured key and password hidden in it), the config's
    warnings logged, and the assistant."""
    configure_logging(config, providers.secret_values(config))
    for warning in config.warnings:
        logger.warning("[CONFIG] %s", warning)
    return Assistant(config)
