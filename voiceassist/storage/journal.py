"""The journal: where a turn goes when a call is done with it, so that no turn is ever lost.

Every turn and call end goes to the database; if the database is unreachable, slow (past
``[database] timeout``) or rejects the write, it goes to the local spool instead and is replayed
later (``voiceassist db flush``, the FastAGI server's flusher, or the next process-AGI call end).
Before either, text is made storable (no NUL characters, which PostgreSQL refuses; no lone
surrogates, which no driver can encode) and, if configured, personal data is redacted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import StorageError
from ..logs import logger
from ..types import CallInfo, Exchange, TurnRecord
from .database_url import database_url
from .redaction import Redactor
from .spool import ReplayResult, Spool


def storable(text: str | None) -> str | None:
    """``text`` as every database accepts it."""
    if text is None:
        return None
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class Journal:
    """Stores turns in the database, or spools them when it cannot."""

    def __init__(self, config: Config) -> None:
        database = config.database
        self.url = database_url(config.section("database"))
        self.prefix = database.table_prefix
        self.timeout = database.timeout
        self.spool = Spool(Path(database.spool_dir))
        self.redact = Redactor.from_setting(", ".join(config.privacy.redact))
        self._store: Any = None
        self._lock = threading.Lock()

    def store(self) -> Any:
        """The :class:`~voiceassist.storage.store.Store` (SQLAlchemy is imported on first use)."""
        with self._lock:
            if self._store is None:
                from .store import Store

                self._store = Store(self.url, self.prefix, self.timeout)
            return self._store

    # -- writing ------------------------------------------------------------------------------
    def _clean_call(self, call: CallInfo) -> CallInfo:
        return CallInfo(**{f.name: storable(getattr(call, f.name)) or "" for f in dataclasses.fields(CallInfo)})

    def _clean_turn(self, turn: TurnRecord) -> TurnRecord:
        return dataclasses.replace(
            turn, error=storable(turn.error), transcript=self.redact(storable(turn.transcript)),
            reply=self.redact(storable(turn.reply)), recording_path=storable(turn.recording_path),
            answer_path=storable(turn.answer_path), heard_reply=self.redact(storable(turn.heard_reply)),
            action_target=storable(turn.action_target),
            finished_at=turn.finished_at or dt.datetime.now(dt.timezone.utc))

    def add_turn(self, call: CallInfo, turn: TurnRecord) -> str:
        """Store the turn; returns ``"stored"``, ``"duplicate"`` (the database already had this
        turn of this call: nothing was written) or ``"spooled"``.

        Raises:
            StorageError: neither the database nor the spool could take it (both messages).
        """
        call, turn = self._clean_call(call), self._clean_turn(turn)
        try:
            return "stored" if self.store().add_turn(call, turn) else "duplicate"
        except StorageError as exc:
            return self._spool(lambda: self.spool.add_turn(call, turn), exc, f"turn {turn.turn_number}")

    def end_call(self, call: CallInfo, end_state: str | None = None) -> str:
        call, ended_at = self._clean_call(call), dt.datetime.now(dt.timezone.utc)
        try:
            self.store().end_call(call, end_state, ended_at)
            return "stored"
        except StorageError as exc:
            return self._spool(lambda: self.spool.end_call(call, end_state, ended_at), exc, "call end")

    def _spool(self, write: Any, db_error: StorageError, what: str) -> str:
        try:
            path = write()
        except StorageError as spool_error:
            raise StorageError(f"{what} lost: {db_error}; and {spool_error}") from None
        logger.warning("[DB] %s spooled to %s (database: %s)", what, path, db_error)
        return "spooled"

    # -- reading ------------------------------------------------------------------------------
    def history(self, uniqueid: str, channel: str) -> list[Exchange]:
        """The call's answered turns, from the database and from the spool (turns the database
        missed while it was down still count as the call's history).

        Only turns of the call whose uniqueid *and* channel both match: a request that names
        another call's uniqueid from another channel gets none of that call's conversation.
        """
        answered: dict[int, Exchange] = {}
        known: set[int] = set()
        try:
            call, rows = self.store().call_rows(uniqueid)
            if call is not None and call["channel"] != channel:
                logger.warning("[DB] %s history withheld: the call is on channel %r, the request came from %r",
                               uniqueid, call["channel"], channel)
                rows = []
            for row in rows:
                known.add(row["turn_number"])
                if row["status"] == "ok":
                    answered[row["turn_number"]] = Exchange(
                        row["transcript"] or "", _heard(row["interrupted"], row["heard_reply"], row["reply"]))
        except StorageError as exc:
            logger.warning("[DB] %s history from the database unavailable: %s", uniqueid, exc)
        for entry in self.spool.entries(uniqueid):
            turn = entry.turn
            if (turn is not None and turn.status == "ok" and turn.turn_number not in known
                    and entry.call.channel == channel):
                answered[turn.turn_number] = Exchange(
                    turn.transcript or "", _heard(turn.interrupted, turn.heard_reply, turn.reply))
        return [answered[number] for number in sorted(answered)]

    # -- replay -------------------------------------------------------------------------------
    def flush(self, wait: bool = True) -> ReplayResult:
        """Replay the spool into the database."""
        try:
            store = self.store()
        except StorageError as exc:
            return ReplayResult(pending=len(self.spool), error=str(exc))
        result = self.spool.replay(store, wait=wait)
        if result.stored or result.duplicates or result.rejected:
            level = logging.WARNING if result.rejected else logging.INFO
            logger.log(level, "[DB] spool replayed: %d stored, %d already there, %d rejected, %d pending",
                       result.stored, result.duplicates, result.rejected, result.pending)
        return result


def _heard(interrupted: bool | None, heard_reply: str | None, reply: str | None) -> str:
    """What the caller heard of an answer: all of it, or (interrupted) the part played before."""
    return (heard_reply or "") if interrupted else (reply or "")


class SpoolFlusher(threading.Thread):
    """Replays the spool every ``interval`` seconds while the FastAGI server runs."""

    def __init__(self, journal: Journal, interval: float) -> None:
        super().__init__(name="voiceassist-spool-flusher", daemon=True)
        self.journal = journal
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                if len(self.journal.spool):
                    self.journal.flush(wait=False)
            except Exception:  # never let the flusher die: the next round may succeed
                logger.exception("[DB] spool replay failed")

    def stop(self) -> None:
        self.stopped.set()
