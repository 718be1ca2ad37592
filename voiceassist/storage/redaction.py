"""Redaction of personal data in what we store: phone numbers, e-mail addresses, card-like digit runs.

Applied to transcripts and replies before they reach the database or the spool (``[privacy]
redact``). The caller's own number stays in the call row: it is the CDR's caller ID too.
Patterns also catch the forms speech-to-text writes ("john dot smith at example dot com",
"4111 1111 1111 1111").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import ConfigError

KINDS = ("card", "email", "phone")

_EMAIL = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    # Spoken: "john dot smith at example dot com"
    r"|\b\w+(?:\s+dot\s+\w+)*\s+at\s+\w+(?:\s+dot\s+\w+)+\b",
    re.IGNORECASE,
)
# 13 to 19 digits, optionally grouped by spaces or dashes (payment card lengths).
_CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
# 7 to 15 digits with an optional leading + and the usual separators: (555) 123-4567, +44 20 7946 0958.
# Not dates: 2026-11-21 has eight digits too.
_PHONE = re.compile(r"(?<![\w+])(?!\d{4}-\d{1,2}-\d{1,2}(?!\d))\+?\(?\d(?:[\s().-]{0,2}\d){6,14}(?![\d])")

_PATTERNS = {"card": _CARD, "email": _EMAIL, "phone": _PHONE}
_LABELS = {"card": "[card]", "email": "[email]", "phone": "[phone]"}


class Redactor:
    """Replaces the configured kinds of personal data with a label such as ``[phone]``."""

    def __init__(self, kinds: Iterable[str]) -> None:
        self.kinds = tuple(dict.fromkeys(k.strip().lower() for k in kinds if k.strip()))
        unknown = [k for k in self.kinds if k not in _PATTERNS]
        if unknown:
            raise ConfigError(f"[privacy] redact: unknown kind(s) {', '.join(unknown)}; use {', '.join(KINDS)}, "
                              "all or none")
        # Cards before phones: a card number also looks like a long phone number.
        self._order = [k for k in KINDS if k in self.kinds]

    @classmethod
    def from_setting(cls, value: str) -> Redactor:
        """``none``/empty, ``all``, or a comma-separated list of ``card, email, phone``."""
        value = value.strip().lower()
        if value in ("", "none", "no", "off"):
            return cls(())
        if value in ("all", "yes", "on"):
            return cls(KINDS)
        return cls(value.split(","))

    def __bool__(self) -> bool:
        return bool(self._order)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for kind in self._order:
            text = _PATTERNS[kind].sub(_LABELS[kind], text)
        return text
