"""A fallback chain: the providers configured for one capability, tried in order.

``[tts] provider = openai, google, espeak`` means: OpenAI; if it fails (or cannot even be set
up, e.g. no key), Google; then the offline voice. The chain reports which provider answered so
the turn can record it. It never moves on once the turn's deadline has run out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import (
    AudioError,
    ConfigError,
    ProviderBadResponse,
    ProviderError,
    TurnDeadlineExceeded,
    VoiceAssistError,
)

T = TypeVar("T")
FailureHook = Callable[[str, VoiceAssistError], None]
# What makes the chain try the next provider. Anything else (a hang-up, a bug) ends the turn.
_FALL_THROUGH = (ProviderError, AudioError, ConfigError)


class ProviderChain:
    """Creates each provider on first use (thread-safe) and remembers the ones that were built."""

    def __init__(self, capability: str, names: list[str], factory: Callable[[str], Any]) -> None:
        self.capability = capability
        self.names = list(names)
        self._factory = factory
        self._instances: dict[str, Any] = {}
        self._lock = threading.Lock()

    def provider(self, name: str) -> Any:
        with self._lock:
            if name not in self._instances:
                self._instances[name] = self._factory(name)
            return self._instances[name]

    def call(self, use: Callable[[Any], T], on_failure: FailureHook | None = None) -> tuple[T, str]:
        """``use(provider)`` with each provider in turn until one succeeds.

        Returns:
            The result and the name of the provider that produced it.

        Raises:
            The last provider's error when all failed (its message names the setting to fix).
        """
        error: VoiceAssistError | None = None
        for position, name in enumerate(self.names):
            label = name
            try:
                provider = self.provider(name)
                label = provider.name
                return use(provider), provider.name
            except TurnDeadlineExceeded:
                raise
            except _FALL_THROUGH as exc:
                error = exc
                if on_failure is not None and position + 1 < len(self.names):
                    on_failure(label, exc)
        assert error is not None
        raise error

    def stream(self, use: Callable[[Any], Iterator[T]],
               on_failure: FailureHook | None = None) -> tuple[Iterator[T], str]:
        """Like :meth:`call` for a streamed answer: a provider that fails before its first piece
        hands over to the next; after that, its errors reach the reader of the iterator."""
        def attempt(provider: Any) -> Iterator[T]:
            pieces = iter(use(provider))
            try:
                first = next(pieces)
            except StopIteration:
                raise ProviderBadResponse(f"{provider.name}: empty reply", provider=provider.name) from None
            return _Rejoined(first, pieces)

        return self.call(attempt, on_failure)


class _Rejoined(Iterator[T]):
    """``first`` then ``rest``; :meth:`close` closes ``rest`` (an interrupted answer stops the
    provider's stream and frees its connection instead of leaving it to the garbage collector).
    Not a generator: a barge-in closes it from another thread while the worker waits in
    ``next``, and a generator refuses that ("already executing"), so the provider's own close
    (which cancels its call) was never reached."""

    def __init__(self, first: T, rest: Iterator[T]) -> None:
        self._first: list[T] = [first]
        self._rest = rest

    def __iter__(self) -> _Rejoined[T]:
        return self

    def __next__(self) -> T:
        if self._first:
            return self._first.pop()
        return next(self._rest)

    def close(self) -> None:
        close = getattr(self._rest, "close", None)
        if close is not None:
            close()

