"""Alembic migrations of the voiceassist schema (run by ``voiceassist db upgrade``)."""
