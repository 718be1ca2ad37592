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

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._chains: dict[Capability, ProviderChain] = {}
        self._journal: Journal | None = None
        self._outbox: Outbox | None = None
        self._outbox_failed = False
        self._live_feed: LiveFeed | None = None

    def check_providers(self) -> None:
        """Raise :class:`ConfigError` when a capability names a provider that does not exist
        (the providers themselves are not created: that needs their SDKs and credentials)."""
        problems = []
        for capability in CAPABILITIES:
            try:
                providers.resolve_all(capability, self.config)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))

    def providers(self, capability: Capability | str) -> ProviderChain:
        """The providers configured for ``capability``, as a fallback chain (raises
        ``ConfigError`` for an unknown name; the providers themselves are built on first use)."""
        capability = Capability(capability)
        with self._lock:
            if capability not in self._chains:
                self._chains[capability] = providers.create_chain(capability, self.config)
            return self._chains[capability]

    def prepare(self, every_provider: bool = True) -> list[str]:
        """Create the providers (SDK imports, clients) now instead of during the first call:
        every provider of each chain, or only the first. Returns the problems found, one line each."""
        problems = []
        for capability in CAPABILITIES:
            try:
                chain = self.providers(capability)
            except VoiceAssistError as exc:
                problems.append(f"{capability} providers not configured: {exc}")
                continue
            for name in chain.names if every_provider else chain.names[:1]:
                try:
                    chain.provider(name)
                except VoiceAssistError as exc:
                    problems.append(f"{capability} provider {name} not ready: {exc}")
        return problems

    def journal(self) -> Journal:
        """The journal: the database, with the spool behind it (SQLAlchemy is imported on first use)."""
        with self._lock:
            if self._journal is None:
                self._journal = Journal(self.config)
            return self._journal

    def live_feed(self) -> LiveFeed:
        """Where calls tell the web console what happens ([web] live_socket)."""
        with self._lock:
            if self._live_feed is None:
                from ..events.live import LiveFeed

                self._live_feed = LiveFeed(self.config.web.live_socket)
            return self._live_feed

    def outbox(self) -> Outbox | None:
        """The webhook events' outbox ([webhooks] outbox_dir), made on first use; None (logged
        once) when it cannot be."""
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
