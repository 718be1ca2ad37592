"""Call actions: what the assistant did besides answering (a transfer and its target, a message,
the end of the call, a refused request), and the call's summary.

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
    op.add_column(f"{prefix}calls", sa.Column("summary", sa.Text))
    # An unversioned database of an earlier release may have it already (the store creates
    # missing indexes before `voiceassist db upgrade` runs).
    if f"ix_{prefix}calls_caller_number" not in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(f"{prefix}calls")}:
        op.create_index(f"ix_{prefix}calls_caller_number", f"{prefix}calls", ["caller_number"])


def downgrade() -> None:
    prefix = context.config.attributes["prefix"]
    op.drop_index(f"ix_{prefix}calls_caller_number", table_name=f"{prefix}calls")
    with op.batch_alter_table(f"{prefix}calls") as batch:
        batch.drop_column("summary")
    with op.batch_alter_table(f"{prefix}turns") as batch:
        batch.drop_column("action_target")
        batch.drop_column("action")
