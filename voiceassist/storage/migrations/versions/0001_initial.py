"""The schema of voiceassist 0.1: calls and turns.

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from voiceassist.storage.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    prefix = context.config.attributes["prefix"]
    op.create_table(
        f"{prefix}calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uniqueid", sa.String(64), nullable=False, unique=True),
        sa.Column("linkedid", sa.String(64)),
        sa.Column("channel", sa.String(255)),
        sa.Column("caller_number", sa.String(255)),
        sa.Column("caller_name", sa.String(255)),
        sa.Column("extension", sa.String(80)),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        **OPTIONS,
    )
    op.create_table(
        f"{prefix}turns",
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
        sa.Column("tts_ms", sa.Integer),
        sa.Column("convert_ms", sa.Integer),
        sa.Column("total_ms", sa.Integer),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.UniqueConstraint("call_id", "turn_number", name=f"{prefix}turns_call_turn"),
        **OPTIONS,
    )


def downgrade() -> None:
    prefix = context.config.attributes["prefix"]
    op.drop_table(f"{prefix}turns")
    op.drop_table(f"{prefix}calls")
