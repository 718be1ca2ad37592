"""Live transcripts of calls between people: each line's speaker (caller or callee).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["prefix"]
    with op.batch_alter_table(f"{prefix}turns") as batch:
        batch.add_column(sa.Column("speaker", sa.String(20)))


def downgrade() -> None:
    prefix = context.config.attributes["prefix"]
    with op.batch_alter_table(f"{prefix}turns") as batch:
        batch.drop_column("speaker")
