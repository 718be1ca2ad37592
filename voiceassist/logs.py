"""Logging: a Python log file shared by many AGI processes, and tagged VERBOSE lines for Asterisk."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re

from .config import Config

logger = logging.getLogger("voiceassist")
_configured = False


class RedactSecrets(logging.Filter):
    """Replace the configured secret values with ``***`` in every record (defence in depth)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._pattern = re.compile("|".join(re.escape(s) for s in secrets)) if secrets else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is not None:
            message = record.getMessage()
            if self._pattern.search(message):
                record.msg, record.args = self._pattern.sub("***", message), None
        return True


def configure_logging(config: Config, secrets: list[str] | tuple[str, ...] = ()) -> None:
    """Attach a WatchedFileHandler (safe with logrotate and many writer processes) once per process;
    ``secrets`` (the configured keys and passwords) never appear in what it writes."""
    global _configured
    if _configured:
        return
    _configured = True
    section = config.section("logging")
    level = getattr(logging, section.get("level").upper(), logging.INFO)
    logger.setLevel(level)
    logger.propagate = False
    secrets = [value for value in secrets if len(value) >= 6]
    path = section.get("file")
    handler: logging.Handler
    try:
        if not path:
            raise OSError("no log file configured")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    except OSError:
        # An AGI's stderr goes to Asterisk's console at best; never fail a call over logging.
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    logger.addHandler(handler)
