"""The prompts a live call plays itself (greeting, "one moment", goodbye ...): our 8 kHz μ-law
sound files, as PCM at the leg's rate.

Asterisk plays the prompts of the AGI flow from its sounds directory; a live call's audio goes
through our media connection, so we read the same files: the admin's copy in Asterisk's sounds
directory when this machine has it (a re-recorded prompt is used), else the copy shipped with
voiceassist. Decoded once per rate and kept.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from ..errors import AudioError
from .conversion import ulaw_to_pcm

PROMPT_RATE = 8000
_NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")
MAX_PROMPT_BYTES = 8000 * 60  # a minute of μ-law: anything larger is not one of our prompts


class PromptSounds:
    """``pcm(name, rate)``: the prompt ``name`` (e.g. ``live-greeting``) from the first of
    ``directories`` that has ``<name>.ulaw``."""

    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories
        self._cache: dict[tuple[str, int], bytes] = {}
        self._lock = threading.Lock()

    def pcm(self, name: str, sample_rate: int) -> bytes:
        if not _NAME.fullmatch(name):
            raise AudioError(f"prompt name {name!r} is not one of ours")
        with self._lock:
            cached = self._cache.get((name, sample_rate))
        if cached is not None:
            return cached
        pcm = ulaw_to_pcm(self._read(name), PROMPT_RATE, sample_rate)
        with self._lock:
            self._cache[(name, sample_rate)] = pcm
        return pcm

    def _read(self, name: str) -> bytes:
        for directory in self.directories:
            path = directory / f"{name}.ulaw"
            try:
                with open(path, "rb") as handle:
                    data = handle.read(MAX_PROMPT_BYTES + 1)
            except OSError:
                continue
            if 0 < len(data) <= MAX_PROMPT_BYTES:
                return data
        raise AudioError(f"prompt {name}.ulaw not found in {', '.join(map(str, self.directories))}")
