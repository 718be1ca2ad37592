"""The Assistant: configuration plus providers and storage, created once and shared by calls.

Process AGI builds one per call; the FastAGI server builds one and shares it across threads, so
the SDK clients (and their connection pools) are created once.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import providers
from ..config import Config
from ..errors import ConfigError, VoiceAssistError
from ..logs import configure_logging, logger
from ..providers.chain import ProviderChain


class Assistant:
    """Holds the config and lazily creates providers and the store (thread-safe)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._instances: dict[str, Any] = {}
        configure_logging(config, providers.secret_values(config))
        for warning in config.warnings:
            logger.warning("[CONFIG] %s", warning)

    def check_providers(self) -> None:
        """Raise :class:`ConfigError` when a capability names a provider that does not exist
        (the providers themselves are not created: that needs their SDKs and credentials)."""
        problems = []
        for capability in ("stt", "llm", "tts"):
            try:
                providers.resolve_all(capability, self.config)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))

    def providers(self, capability: str) -> ProviderChain:
        """The ``stt``/``llm``/``tts`` providers configured, as a fallback chain (raises
        ``ConfigError`` for an unknown name; providers themselves are built on first use)."""
        with self._lock:
            if capability not in self._instances:
                self._instances[capability] = providers.create_chain(capability, self.config)
            return self._instances[capability]

    def prepare(self, every_provider: bool = True) -> list[str]:
        """Create the providers (SDK imports, clients) now instead of during the first call:
        every provider of each chain, or only the first. Returns the problems found, one line each."""
        problems = []
        for capability in ("stt", "llm", "tts"):
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

    def journal(self) -> Any:
        """The :class:`~voiceassist.storage.journal.Journal`: the database, with the spool behind it."""
        with self._lock:
            if "journal" not in self._instances:
                from ..storage.journal import Journal

                self._instances["journal"] = Journal(self.config)
            return self._instances["journal"]

    def store(self) -> Any:
        """The :class:`~voiceassist.storage.store.Store` (imports SQLAlchemy on first use)."""
        return self.journal().store()
