"""An AGI session as a :class:`~voiceassist.call.channel.CallChannel`.

Only the call's own thread may talk to Asterisk on an AGI connection: two threads writing
commands would interleave them. A line logged by another thread (the pipelined answer's
synthesizer) therefore waits, and the call's thread sends it with its next line or when it next
asks whether the caller is still there.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import AGIError
from ..types import CallState
from .agi import AGISession
from .dialplan import set_call_state


class AGIChannel:
    """The call behind ``session``; made on the call's own thread."""

    def __init__(self, session: AGISession) -> None:
        self.session = session
        self._owner = threading.current_thread()
        self._pending: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def play(self, sound: Path, keys: str = "") -> str:
        self.flush()
        self.session.raise_if_hung_up()
        key = self.session.stream_file(str(sound), keys)
        return key if key and key in keys else ""  # only a key we asked for stops the answer

    def set_state(self, state: CallState) -> None:
        set_call_state(self.session, state)

    def log(self, line: str, *, important: bool = False) -> None:
        with self._lock:
            self._pending.append((line, 1 if important else 3))
        if threading.current_thread() is self._owner:
            self.flush()

    def hung_up(self) -> bool:
        try:
            self.flush()
            return self.session.poll_hangup()
        except AGIError:
            return True

    def flush(self) -> None:
        """Send the console lines other threads logged (on the call's thread only)."""
        if threading.current_thread() is not self._owner:
            return
        with self._lock:
            lines, self._pending = self._pending, []
        if self.session.closed:
            return
        for line, verbosity in lines:
            try:
                self.session.verbose(line, verbosity)
            except AGIError:
                return  # VERBOSE is dead-channel safe; a closed socket is not worth failing the turn over
