"""Which database: the ``[database] url`` setting turned into a SQLAlchemy URL.

``freepbx`` reads FreePBX's credentials (``/etc/freepbx.conf``, or the file named by
``freepbx_conf``) and uses its CDR database. Plain ``mysql://``, ``mariadb://`` and
``postgresql://`` URLs get the pure-Python drivers we install (PyMySQL, psycopg 3) instead of
SQLAlchemy's C-library defaults, and MySQL URLs get ``charset=utf8mb4``.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Section
from ..errors import ConfigError

_DRIVERS = {"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql", "postgresql": "postgresql+psycopg",
            "postgres": "postgresql+psycopg"}


def database_url(section: Section) -> str:
    """The SQLAlchemy URL for ``[database]``."""
    url = section.get("url").strip()
    if not url:
        raise ConfigError(f"[database] url is empty (from {section.source}); e.g. sqlite:////var/lib/asterisk/"
                          "voiceassist/voiceassist.db, freepbx, mysql://user:pass@localhost/db")
    if url.lower() == "freepbx":
        from .freepbx import FREEPBX_CONF, freepbx_database_url

        return freepbx_database_url(Path(section.get("freepbx_conf", str(FREEPBX_CONF))))
    return with_driver(url)


def with_driver(url: str) -> str:
    """``url`` with our drivers for MySQL/MariaDB and PostgreSQL when it names none."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ConfigError(f"[database] url {url.split('@')[-1]!r} is not a URL (scheme://...) nor 'freepbx'")
    if scheme.lower() in _DRIVERS:
        scheme = _DRIVERS[scheme.lower()]
    if scheme.startswith(("mysql", "mariadb")) and "charset=" not in rest:
        rest += ("&" if "?" in rest else "?") + "charset=utf8mb4"
    return f"{scheme}://{rest}"
