"""The database schema: two tables (calls, turns) with a configurable prefix, the same on SQLite,
MariaDB/MySQL and PostgreSQL.

``sql/<database>.sql`` holds this schema as DDL (``python -m voiceassist.storage.schema`` writes them) and
``voiceassist/migrations`` carries older databases forward; tests keep all three in step.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

# The Alembic revision this schema is (the newest file in voiceassist/migrations/versions).
SCHEMA_REVISION = "0006"

TURN_STATUSES = ("ok", "no_speech", "stt_error", "llm_error", "tts_error", "hangup", "error")

# Per-turn timings kept in their own columns (milliseconds): llm_first is the chat model's first
# words, first_audio the turn's start to its first answer audio handed to Asterisk, speech_to_audio
# the end of the caller's speech (as the dialplan's silence detection places it) to that audio;
# played is how much of the answer the caller was sent (a real-time call: up to an interruption).
TIMED_STAGES = ("recording", "stt", "llm", "llm_first", "tts", "convert", "first_audio", "speech_to_audio",
                "played", "total")


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database.

    MariaDB's DATETIME has no time zone and SQLite stores text, so every database keeps plain UTC
    and we attach the zone when reading.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=3))  # milliseconds, like the others
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


def _table_options() -> dict[str, Any]:
    # FreePBX's asteriskcdrdb may default to latin1: our text (any language, any caller ID) needs utf8mb4.
    return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def build_metadata(prefix: str = "voiceassist_") -> sa.MetaData:
    """The schema, with every table name starting with ``prefix``."""
    metadata = sa.MetaData()
    sa.Table(
        f"{prefix}calls", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        # Asterisk's ${UNIQUEID} and ${CHANNEL(linkedid)}: the keys of the CDR (cdr.uniqueid, cdr.linkedid).
        sa.Column("uniqueid", sa.String(64), nullable=False, unique=True),
        sa.Column("linkedid", sa.String(64), index=True),
        sa.Column("channel", sa.String(255)),
        # Indexed: a caller's earlier calls are looked up by number ([memory]).
        sa.Column("caller_number", sa.String(255), index=True),
        sa.Column("caller_name", sa.String(255)),
        sa.Column("extension", sa.String(80)),
        sa.Column("started_at", UTCDateTime, nullable=False, index=True),
        sa.Column("ended_at", UTCDateTime),
        # How the call ended: the dialplan's VA_STATE at hang-up (done, recording, thinking, answering).
        sa.Column("end_state", sa.String(20)),
        # A short summary of the call by the chat model ([general] call_summary), after it ended.
        sa.Column("summary", sa.Text),
        **_table_options(),
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
        # A real-time call: the caller interrupted the answer, and the part of it they heard.
        sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("heard_reply", sa.Text),
        # What the assistant did besides answering: transfer, message, end_call, refused (a
        # request for something not allowed), left_message (the message itself); and its target.
        sa.Column("action", sa.String(20)),
        sa.Column("action_target", sa.String(255)),
        # A transcribed call between people: who said the line (caller, callee); else NULL.
        sa.Column("speaker", sa.String(20)),
        sa.Column("language", sa.String(40)),
        *[sa.Column(f"{stage}_ms", sa.Integer) for stage in TIMED_STAGES],
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        # One row per turn of a call: replaying the spool can never store a turn twice.
        sa.UniqueConstraint("call_id", "turn_number", name=f"{prefix}turns_call_turn"),
        **_table_options(),
    )
    # Alembic's bookkeeping, prefixed like our tables so it never meets another application's.
    sa.Table(
        f"{prefix}alembic_version", metadata,
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{prefix}alembic_version_pkc"),  # as Alembic names it
        **_table_options(),
    )
    return metadata


DIALECTS = {"sqlite": sqlite.dialect(), "mariadb": mysql.dialect(),
            "postgresql": postgresql.dialect()}  # type: ignore[no-untyped-call]


def ddl(database: str, prefix: str = "voiceassist_") -> str:
    """The schema as SQL for ``database`` (sqlite, mariadb or postgresql), as in ``sql/``."""
    dialect = DIALECTS[database]
    metadata = build_metadata(prefix)
    parts = [f"-- voiceassist schema (revision {SCHEMA_REVISION}) for {database}.\n"
             "-- Written by `python -m voiceassist.storage.schema`; tests/test_storage.py keeps it equal to the\n"
             "-- models. Later changes arrive as migrations: `voiceassist db upgrade`.\n"]
    for table in metadata.sorted_tables:
        parts.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip() + ";\n")
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            parts.append(str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip() + ";\n")
    version = metadata.tables[f"{prefix}alembic_version"]
    parts.append(f"INSERT INTO {version.name} (version_num) VALUES ('{SCHEMA_REVISION}');\n")
    return "\n".join("\n".join(line.rstrip() for line in part.splitlines()) + "\n" for part in parts)


def main(argv: list[str] | None = None) -> int:
    """Write ``sql/<database>.sql`` for each database into the directory given (default ``sql``)."""
    target = Path((argv or sys.argv[1:] or ["sql"])[0])
    for database in DIALECTS:
        (target / f"{database}.sql").write_text(ddl(database), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
