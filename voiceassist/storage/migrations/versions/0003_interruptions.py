"""Real-time calls: whether the caller interrupted the answer, what they heard of it, and how
much of it was played.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["prefix"]
    with op.batch_alter_table(f"{prefix}turns") as batch:  # batch: SQLite cannot add a NOT NULL column otherwise
        batch.add_column(sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("heard_reply", sa.Text))
        batch.add_column(sa.Column("played_ms", sa.Integer))


def downgrade() -> None:
    prefix = context.config.attributes["prefix"]
    with op.batch_alter_table(f"{prefix}turns") as batch:
        batch.drop_column("played_ms")
        batch.drop_column("heard_reply")
        batch.drop_column("interrupted")
