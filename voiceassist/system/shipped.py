"""Files shipped beside the package (the dialplan, the prompts, agi-bin): installed under
``<prefix>/share/voiceassist`` by pip, or at the top of the source checkout (editable installs)."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def shipped_candidates(name: str) -> tuple[Path, Path]:
    return Path(sys.prefix) / "share" / "voiceassist" / name, PACKAGE.parent / name


def shipped_path(name: str) -> Path | None:
    """Where ``name`` (``sounds``, ``extensions_custom.conf`` ...) is, or None."""
    return next((candidate for candidate in shipped_candidates(name) if candidate.exists()), None)
