"""The line a call is on, as the turn sees it: play a sound, note where the call is, write a
line on the console, and ask whether the caller is still there.

:class:`CallChannel` is all a turn needs; an AGI session
(:class:`voiceassist.asterisk.channel.AGIChannel`), a real-time media connection and the
:class:`LocalChannel` of ``voiceassist ask`` and the tests implement it as equals.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import CallerHungUp
from ..logs import logger
from ..types import CallState


@runtime_checkable
class CallChannel(Protocol):
    """A call's line. Only the call's own thread plays; any thread may log."""

    def play(self, sound: Path, keys: str = "") -> str:
        """Play ``sound`` (a phone-audio file, named without its extension as Asterisk names
        sounds) and return when it has been played, or as soon as the caller presses one of
        ``keys``: returns that key ("": played to the end).

        Raises:
            CallerHungUp: the caller is gone.
        """
        ...

    def set_state(self, state: CallState) -> None:
        """Note where the call is (what a hang-up from now on interrupts)."""
        ...

    def log(self, line: str, *, important: bool = False) -> None:
        """A line for whoever watches the call (Asterisk's console); never fails the call."""
        ...

    def hung_up(self) -> bool:
        """Whether the caller is gone, asked without waiting."""
        ...


@dataclass
class LocalChannel:
    """A channel with no telephone behind it (``voiceassist ask``, tests): it notes what would
    have been played and said; ``hang_up()`` plays a caller who leaves."""

    played: list[Path] = field(default_factory=list)
    states: list[CallState] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    gone: threading.Event = field(default_factory=threading.Event)
    # Keys the caller presses, one per sound played from the first (a test's script; "": none).
    presses: list[str] = field(default_factory=list)

    def play(self, sound: Path, keys: str = "") -> str:
        if self.gone.is_set():
            raise CallerHungUp("the caller hung up")
        self.played.append(sound)
        key = self.presses.pop(0) if self.presses else ""
        return key if key and key in keys else ""

    def set_state(self, state: CallState) -> None:
        self.states.append(state)

    def log(self, line: str, *, important: bool = False) -> None:
        self.lines.append(line)

    def hung_up(self) -> bool:
        return self.gone.is_set()

    def hang_up(self) -> None:
        self.gone.set()


class CallLog:
    """Tagged lines (``[STT]``, ``[LLM]``, ``[TTS]``, ``[DB]`` ...) with the call's uniqueid, to our
    log and to whoever watches the call on its channel (warnings and errors stand out there)."""

    def __init__(self, channel: CallChannel | None, uniqueid: str) -> None:
        self.channel = channel
        self.uniqueid = uniqueid

    def __call__(self, tag: str, message: str, level: int = logging.INFO) -> None:
        logger.log(level, "[%s] %s %s", tag, self.uniqueid, message)
        if self.channel is not None:
            self.channel.log(f"[{tag}] {self.uniqueid} {message}", important=level >= logging.WARNING)
