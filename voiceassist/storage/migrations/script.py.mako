"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from alembic import context, op
import sqlalchemy as sa

from voiceassist.schema import UTCDateTime  # noqa: F401  (the schema's date type)

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = context.config.attributes["prefix"]
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    prefix = context.config.attributes["prefix"]
    ${downgrades if downgrades else "pass"}
