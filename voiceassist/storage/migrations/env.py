"""Alembic environment: the connection and table prefix come from :mod:`voiceassist.storage.migrate`."""

from alembic import context

connection = context.config.attributes["connection"]
prefix = context.config.attributes["prefix"]
context.configure(connection=connection, version_table=f"{prefix}alembic_version",
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
