"""Storage of calls and turns with SQLAlchemy Core (SQLite by default).

SQLAlchemy is imported here and nowhere else, so an AGI process that cannot reach the database
still answers the caller. Tables carry a prefix (``voiceassist_``) so they can live beside
FreePBX's own tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .errors import StorageError
from .providers.base import Exchange
from .storage_types import CallInfo, TurnRecord

TURN_STATUSES = ("ok", "no_speech", "stt_error", "llm_error", "tts_error", "hangup", "error")


def build_metadata(prefix: str = "voiceassist_") -> sa.MetaData:
    """The schema; ``sql/*.sql`` holds the same DDL per database (kept in step by a test)."""
    metadata = sa.MetaData()
    sa.Table(
        f"{prefix}calls", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uniqueid", sa.String(64), nullable=False, unique=True),
        sa.Column("linkedid", sa.String(64)),
        sa.Column("channel", sa.String(255)),
        sa.Column("caller_number", sa.String(255)),
        sa.Column("caller_name", sa.String(255)),
        sa.Column("extension", sa.String(80)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        f"{prefix}turns", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.Integer, sa.ForeignKey(f"{prefix}calls.id", ondelete="CASCADE"), nullable=False),
        sa.Column("turn_number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("transcript", sa.Text),
        sa.Column("stt_confidence", sa.Float),
        sa.Column("reply", sa.Text),
        sa.Column("recording_path", sa.String(1024)),
        sa.Column("answer_path", sa.String(1024)),
        sa.Column("stt_provider", sa.String(40)),
        sa.Column("llm_provider", sa.String(40)),
        sa.Column("tts_provider", sa.String(40)),
        sa.Column("recording_ms", sa.Integer),
        sa.Column("stt_ms", sa.Integer),
        sa.Column("llm_ms", sa.Integer),
        sa.Column("llm_first_ms", sa.Integer),
        sa.Column("tts_ms", sa.Integer),
        sa.Column("convert_ms", sa.Integer),
        sa.Column("first_audio_ms", sa.Integer),
        sa.Column("total_ms", sa.Integer),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("call_id", "turn_number", name=f"{prefix}turns_call_turn"),
    )
    return metadata


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# Per-turn timings kept in their own columns (milliseconds): llm_first is the chat model's first
# words, first_audio the turn's start to its first answer audio handed to Asterisk.
TIMED_STAGES = ("recording", "stt", "llm", "llm_first", "tts", "convert", "first_audio", "total")


class Store:
    """Calls and turns in one SQL database, created on first use."""

    def __init__(self, url: str, prefix: str = "voiceassist_") -> None:
        self.url = url
        self.metadata = build_metadata(prefix)
        self.calls = self.metadata.tables[f"{prefix}calls"]
        self.turns = self.metadata.tables[f"{prefix}turns"]
        try:
            self.engine = _make_engine(url)
        except Exception as exc:
            raise StorageError(f"database URL {_redact(url)} is not usable: {exc}") from None
        self._ready = False

    def _connect(self) -> Any:
        try:
            if not self._ready:
                self.metadata.create_all(self.engine)
                self._ready = True
            return self.engine.begin()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"database {_redact(self.url)} unavailable: {exc.__class__.__name__}: {exc.orig if hasattr(exc, 'orig') else exc}") from None

    def _call_id(self, conn: Any, call: CallInfo) -> int:
        row = conn.execute(sa.select(self.calls.c.id).where(self.calls.c.uniqueid == call.uniqueid)).first()
        if row:
            return int(row[0])
        try:
            with conn.begin_nested():
                result = conn.execute(self.calls.insert().values(
                    uniqueid=call.uniqueid, linkedid=call.linkedid or None, channel=call.channel,
                    caller_number=call.caller_number, caller_name=call.caller_name,
                    extension=call.extension, started_at=_utcnow()))
                return int(result.inserted_primary_key[0])
        except sa.exc.IntegrityError:  # another process of the same call inserted it first
            row = conn.execute(sa.select(self.calls.c.id).where(self.calls.c.uniqueid == call.uniqueid)).one()
            return int(row[0])

    def history(self, uniqueid: str) -> list[Exchange]:
        """The call's answered turns, oldest first."""
        query = (sa.select(self.turns.c.transcript, self.turns.c.reply)
                 .join(self.calls, self.calls.c.id == self.turns.c.call_id)
                 .where(self.calls.c.uniqueid == uniqueid, self.turns.c.status == "ok")
                 .order_by(self.turns.c.turn_number))
        try:
            with self._connect() as conn:
                return [Exchange(question=q or "", answer=a or "") for q, a in conn.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot read history: {exc}") from None

    def add_turn(self, call: CallInfo, turn: TurnRecord) -> None:
        """Store ``turn`` (creating the call row on its first turn)."""
        values = {
            "turn_number": turn.turn_number, "status": turn.status, "error": turn.error,
            "transcript": turn.transcript, "stt_confidence": turn.stt_confidence, "reply": turn.reply,
            "recording_path": turn.recording_path, "answer_path": turn.answer_path,
            "stt_provider": turn.stt_provider, "llm_provider": turn.llm_provider, "tts_provider": turn.tts_provider,
            "started_at": turn.started_at, "finished_at": turn.finished_at or _utcnow(),
            **{f"{stage}_ms": turn.timings.get(stage) for stage in TIMED_STAGES},
        }
        try:
            with self._connect() as conn:
                values["call_id"] = self._call_id(conn, call)
                conn.execute(self.turns.insert().values(**values))
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot store turn {turn.turn_number} of {call.uniqueid}: {exc}") from None

    def end_call(self, call: CallInfo) -> None:
        """Mark the call as ended now (creating its row if no turn was stored)."""
        try:
            with self._connect() as conn:
                call_id = self._call_id(conn, call)
                conn.execute(self.calls.update().where(self.calls.c.id == call_id).values(ended_at=_utcnow()))
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot mark call {call.uniqueid} ended: {exc}") from None

    def call_rows(self, uniqueid: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The call row and its turn rows (for the CLI and tests)."""
        with self._connect() as conn:
            call = conn.execute(sa.select(self.calls).where(self.calls.c.uniqueid == uniqueid)).mappings().first()
            if call is None:
                return None, []
            turns = conn.execute(sa.select(self.turns).where(self.turns.c.call_id == call["id"])
                                 .order_by(self.turns.c.turn_number)).mappings().all()
            return dict(call), [dict(t) for t in turns]

    def all_calls(self) -> Sequence[dict[str, Any]]:
        with self._connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(self.calls).order_by(self.calls.c.id)).mappings()]


def _make_engine(url: str) -> Any:
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Many AGI processes write at once: WAL lets readers and one writer work together, and the
        # busy timeout makes a writer wait for the lock instead of failing.
        engine = sa.create_engine(url, connect_args={"timeout": 15})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"
