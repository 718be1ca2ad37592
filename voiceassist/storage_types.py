"""Plain records of calls and turns (no SQLAlchemy import: the AGI path stays light)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass
class CallInfo:
    """What Asterisk told us about the call (AGI environment and arguments)."""

    uniqueid: str
    linkedid: str = ""
    channel: str = ""
    caller_number: str = ""
    caller_name: str = ""
    extension: str = ""


@dataclass
class TurnRecord:
    """One question and answer, with its outcome and per-stage timings in milliseconds."""

    turn_number: int
    status: str = "ok"
    error: str | None = None
    transcript: str | None = None
    stt_confidence: float | None = None
    reply: str | None = None
    recording_path: str | None = None
    answer_path: str | None = None
    stt_provider: str | None = None
    llm_provider: str | None = None
    tts_provider: str | None = None
    timings: dict[str, int] = field(default_factory=dict)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    finished_at: dt.datetime | None = None
