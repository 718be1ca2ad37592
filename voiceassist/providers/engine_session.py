"""What every conversation engine's session shares: a reader thread that turns the engine's
messages into :class:`~voiceassist.types.EngineEvent` objects on a queue, with the limits that
keep a broken or hostile engine from harming the call.

The engine is another program, often on another machine: a flood of events (more than the call
can take), a stream of messages that are not its protocol, a connection that closes, all end
the session with one fatal ``ERROR`` event, and the call's conversation hands the caller to the
cascade. Subclasses implement :meth:`EngineSessionBase._receive` (the messages, as events) and
the sending side.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..config import seconds, setting
from ..logs import logger
from ..types import EngineEvent, EngineEventKind, Exchange, ToolCall

# Events not yet taken by the conversation before the engine is considered to flood us.
MAX_QUEUED_EVENTS = 2000
# Messages that are not the protocol's before the engine counts as broken.
MAX_SKIPPED = 10000
# Seconds a send to the engine may block (its receive buffer full: it stopped reading).
SEND_TIMEOUT = 2.0
# The most of one transcript kept (a turn's words, not a document).
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class EngineSettings:
    """What every conversation engine's section has (read by the call's conversation)."""

    # Play voiceassist's own greeting when the call starts (no: the engine greets the caller itself).
    greet: bool = True
    # The caller's pause that ends a question, for the engine's end-of-speech detection.
    vad_silence_duration_ms: int = setting(500, minimum=100, maximum=5000)
    # Seconds to connect and have the session set up.
    connect_timeout: float = seconds(5.0)
    # Seconds after the caller stopped talking within which the engine must begin its answer.
    response_timeout: float = seconds(8.0)
    # Times a session that fails mid-call is opened again (with the call so far) before the cascade
    # takes over (0: the cascade at once).
    reconnect: int = setting(1, minimum=0, maximum=5)


class EngineSessionBase:
    """One call's session with an engine (see the module's docstring). ``name`` is the engine's,
    for the log."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self._closed = threading.Event()
        self._skipped = 0

    # -- for the conversation ---------------------------------------------------------------------
    def next_event(self, timeout: float) -> EngineEvent | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def answer_cut(self, played_seconds: float) -> None:
        """The caller talked over the answer in progress and heard ``played_seconds`` of it
        (engines that keep the conversation's context trim the answer to that)."""

    def send_text(self, text: str) -> None:
        """Something the caller did without speaking, told to the engine (none: not passed on)."""

    def send_tool_result(self, call: ToolCall, output: str) -> None:
        """The result of a tool the engine called, for it to answer from (only engines that call
        tools are sent one)."""

    def close(self) -> None:
        self._closed.set()

    # -- for the subclass -------------------------------------------------------------------------
    def start_reading(self) -> None:
        threading.Thread(target=self._read, daemon=True, name=f"voiceassist-{self.name}").start()

    def _receive(self) -> Iterator[EngineEvent | None]:
        """The engine's messages as events (None: a message the call does not need), until the
        connection ends; raising ends the session as failed."""
        raise NotImplementedError

    def _read(self) -> None:
        why = "the connection closed"
        try:
            for event in self._receive():
                if self._events.qsize() > MAX_QUEUED_EVENTS:
                    why = "the engine sent more than the call could take"
                    break
                if self._skipped > MAX_SKIPPED:
                    why = f"the engine sent {self._skipped} messages that are not its protocol's"
                    break
                if event is not None:
                    self._events.put(event)
                    if event.kind is EngineEventKind.ERROR and event.fatal:
                        return
        except Exception as exc:
            why = f"the connection broke: {str(exc)[:200]}"
        if not self._closed.is_set():
            self._events.put(EngineEvent(EngineEventKind.ERROR, text=why, fatal=True))

    def _skip(self, why: str) -> None:
        """A message that is not the protocol's: logged the first few times, then every 1000th."""
        self._skipped += 1
        if self._skipped <= 5 or self._skipped % 1000 == 0:
            logger.warning("[ENGINE] %s sent %s: skipped (%d so far this call)", self.name, why, self._skipped)


def with_history(instructions: str, history: Sequence[Exchange]) -> str:
    """The instructions, with the call's earlier exchanges appended (for an engine that takes
    over a call, or keeps no history of its own)."""
    if not history:
        return instructions
    said = "\n".join(f"Caller: {e.question}\nAssistant: {e.answer}" for e in history)
    return f"{instructions}\n\nThe conversation so far:\n{said}".strip()


def set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """Make a blocking socket's sends fail after ``seconds`` (SO_SNDTIMEO; its reads unchanged):
    the websockets library's own send has no timeout, and a server that stops reading must not
    block the call."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))
