"""Logging: a Python log file shared by many AGI processes, and tagged VERBOSE lines for Asterisk."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys

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


class NoFollowFileHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler (safe with logrotate and many writer processes) that never opens the
    log through a symbolic link, also when it reopens the file after a rotation."""

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _log_handler(path: str) -> logging.Handler:
    """The handler for ``path``. A root process writes the file only in a directory only root can
    write: in the asterisk user's log directory that user could swap the file for a link or hard
    link to any file root would then append to, so root logs to standard error instead (root's
    commands work as the asterisk user, who writes the log, before they configure logging)."""
    if not path:
        raise OSError("no log file configured")
    if os.geteuid() == 0:
        from .errors import UnsafePath
        from .system.safe_files import open_directory

        try:
            open_directory(os.path.dirname(os.path.abspath(path)), trusted=True).close()
        except (UnsafePath, FileNotFoundError):
            stderr = logging.StreamHandler(sys.stderr)
            stderr.setLevel(logging.WARNING)  # the command's own output stays readable
            return stderr
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return NoFollowFileHandler(path, encoding="utf-8")


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
        handler = _log_handler(path)
    except OSError:
        # An AGI's stderr goes to Asterisk's console at best; never fail a call over logging.
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    logger.addHandler(handler)
