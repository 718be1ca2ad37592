"""Every kind of call keeps its turns the same way: stored through the journal (the database, or
the spool while it is down), and the call's earlier exchanges read back as the model's history.

Neither may cost the caller their answer: a database that is down is logged, never raised.
"""

from __future__ import annotations

import logging

from ..types import CallInfo, Exchange, TurnRecord
from .assistant import Assistant
from .call_events import announce, turn_data
from .channel import CallLog


def store_turn(assistant: Assistant, call: CallInfo, record: TurnRecord, log: CallLog) -> str:
    """Store ``record`` (in the language of ``assistant``'s calls unless it says one); returns what
    happened (stored, duplicate, spooled, or NOT stored), logged."""
    if record.language is None:
        record.language = assistant.config.general.language
    try:
        outcome = assistant.journal().add_turn(call, record)
    except Exception as exc:  # StorageError, or a driver error: the call goes on
        log("DB", f"turn {record.turn_number} NOT stored: {exc}", logging.ERROR)
        return "NOT stored"
    if outcome != "duplicate":
        announce(assistant, "turn.completed", call, turn=turn_data(record))
    said = "duplicate (the call already has this turn; not stored again):" if outcome == "duplicate" else outcome
    log("DB", f"{said} turn {record.turn_number} status {record.status} for caller "
              f"{call.caller_number!r} {call.caller_name!r}",
        logging.INFO if outcome == "stored" else logging.WARNING)
    return outcome


def call_history(assistant: Assistant, call: CallInfo, log: CallLog) -> list[Exchange]:
    """The call's answered turns, oldest first ([] when the database and spool cannot be read)."""
    try:
        return assistant.journal().history(call.uniqueid, call.channel)
    except Exception as exc:  # an unreachable database must not silence the caller
        log("DB", f"history unavailable, answering without it: {exc}", logging.WARNING)
        return []
