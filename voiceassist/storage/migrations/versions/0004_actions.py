"""Call actions: what the assistant did besides answering (a transfer and its target, a message,
the end of the call, a refused request).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["prefix"]
    with op.batch_alter_table(f"{prefix}turns") as batch:
        batch.add_column(sa.Column("action", sa.String(20)))
        batch.add_column(sa.Column("action_target", sa.String(255)))


def downgrade() -> None:
    prefix = context.config.attributes["prefix"]
    with op.batch_alter_table(f"{prefix}turns") as batch:
        batch.drop_column("action_target")
        batch.drop_column("action")
