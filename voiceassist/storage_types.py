"""Moved to :mod:`voiceassist.types` (kept while other modules still import it from here)."""

from .types import CallInfo, TurnRecord

__all__ = ["CallInfo", "TurnRecord"]
