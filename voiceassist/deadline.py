"""The turn's total time budget, seen by every provider call made on its behalf.

A turn sets a deadline (``[general] turn_deadline``) with :func:`turn_deadline`; providers ask
:func:`budget` for the timeout of each SDK call, so no single call, retry or fallback can run past
it, and the caller hears the apology prompt in time instead of dead air. The deadline lives in a
context variable: threads that work for the turn (the pipelined synthesizer) run in a copy of the
turn's context (:func:`contextvars.copy_context`), FastAGI calls in other threads never see it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import TurnDeadlineExceeded

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("voiceassist_deadline", default=None)

# Below this many seconds a network call cannot succeed; give up at once.
MINIMUM_USEFUL = 0.05


@contextmanager
def turn_deadline(seconds: float | None) -> Iterator[None]:
    """Provider calls inside the block end within ``seconds`` (``None`` or ``<= 0``: no limit)."""
    token = _deadline.set(time.monotonic() + seconds if seconds and seconds > 0 else None)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left in the current turn, or ``None`` when no deadline applies."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def budget(timeout: float, provider: str) -> float:
    """The timeout for one provider call: ``timeout`` cut to what is left of the turn.

    Raises:
        TurnDeadlineExceeded: nothing useful is left.
    """
    left = remaining()
    if left is None:
        return timeout
    if left < MINIMUM_USEFUL:
        raise TurnDeadlineExceeded(f"{provider}: the turn's time budget ([general] turn_deadline) ran out",
                                   provider=provider)
    return min(timeout, left)


def lift() -> None:
    """End the deadline for the rest of the current context (the pipelined synthesizer lifts it
    once the first sentence is ready: from then on the caller is listening, not waiting)."""
    _deadline.set(None)
