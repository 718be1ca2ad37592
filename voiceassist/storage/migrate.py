"""Schema migrations with Alembic: ``voiceassist db upgrade`` and the revision checks.

The scripts live in ``voiceassist/migrations/versions``; the version table carries our prefix
(``voiceassist_alembic_version``) so it never meets another application's Alembic table in a
shared database such as FreePBX's asteriskcdrdb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import StorageError
from .store import Store

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Databases made before migrations existed (voiceassist 0.1/0.2) have our tables but no revision:
# their schema is at least revision 0001, and 0002 adds only what is missing.
UNVERSIONED_BASE = "0001"


def _alembic_config(connection: Any = None, prefix: str = "voiceassist_") -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["prefix"] = prefix
    return config


def head_revision() -> str:
    """The newest migration (the schema this version of voiceassist writes)."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())


def upgrade(store: Store, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to ``revision`` (creating the tables in an empty one).

    Returns (revision before, revision after).
    """
    from alembic import command

    try:
        before = store.schema_revision()
        with store.engine.begin() as connection:
            config = _alembic_config(connection, store.prefix)
            if before is None and sa.inspect(connection).has_table(store.calls.name):
                command.stamp(config, UNVERSIONED_BASE)
                before = f"unversioned (treated as {UNVERSIONED_BASE})"
            command.upgrade(config, revision)
        return before, store.schema_revision()
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"migration of {store.where} failed: {type(exc).__name__}: "
                           f"{getattr(exc, 'orig', None) or exc}") from None
