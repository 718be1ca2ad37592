"""Per-turn first-words, first-audio and end-of-speech timings; how the call ended; indexes for
listing, pruning and joining the CDR.

Databases created by voiceassist 0.2 (before migrations) already have llm_first_ms and
first_audio_ms: columns are only added where missing.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TURN_COLUMNS = ("llm_first_ms", "first_audio_ms", "speech_to_audio_ms")


def upgrade() -> None:
    prefix = context.config.attributes["prefix"]
    inspector = sa.inspect(op.get_bind())
    turn_columns = {c["name"] for c in inspector.get_columns(f"{prefix}turns")}
    for name in TURN_COLUMNS:
        if name not in turn_columns:
            op.add_column(f"{prefix}turns", sa.Column(name, sa.Integer))
    call_columns = {c["name"] for c in inspector.get_columns(f"{prefix}calls")}
    if "end_state" not in call_columns:
        op.add_column(f"{prefix}calls", sa.Column("end_state", sa.String(20)))
    indexes = {i["name"] for i in inspector.get_indexes(f"{prefix}calls")}
    for column in ("linkedid", "started_at"):
        name = f"ix_{prefix}calls_{column}"
        if name not in indexes:
            op.create_index(name, f"{prefix}calls", [column])


def downgrade() -> None:
    prefix = context.config.attributes["prefix"]
    for column in ("linkedid", "started_at"):
        op.drop_index(f"ix_{prefix}calls_{column}", f"{prefix}calls")
    op.drop_column(f"{prefix}calls", "end_state")
    for name in TURN_COLUMNS:
        op.drop_column(f"{prefix}turns", name)
