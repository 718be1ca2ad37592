"""FreePBX's database credentials, read from ``/etc/freepbx.conf`` without running its PHP.

The file is PHP (``$amp_conf['AMPDBUSER'] = 'freepbxuser';`` ...) that also bootstraps the whole
FreePBX framework, so we only pick the quoted assignments out of it. FreePBX grants its database
user all rights on the CDR database (``asteriskcdrdb``); our tables live there beside ``cdr`` and
``cel`` under their own prefix, linked to the CDR by uniqueid/linkedid.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from ..errors import ConfigError

FREEPBX_CONF = Path("/etc/freepbx.conf")
DEFAULT_CDR_DATABASE = "asteriskcdrdb"

# $amp_conf['KEY'] = 'value';   or   $amp_conf["KEY"] = "value";
_ASSIGNMENT = re.compile(
    r"""^\s*\$amp_conf\[\s*(['"])(?P<key>\w+)\1\s*\]\s*=\s*(?P<quote>['"])(?P<value>(?:\\.|(?!(?P=quote)).)*)(?P=quote)\s*;""",
    re.MULTILINE,
)


def read_amp_conf(path: Path = FREEPBX_CONF) -> dict[str, str]:
    """The ``$amp_conf`` string assignments of ``path``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ConfigError(f"[database] url = freepbx, but {path} does not exist (is this a FreePBX system?)") from None
    except PermissionError:
        raise ConfigError(f"{path} is not readable by this user: run as asterisk or root "
                          "(FreePBX keeps it 0640 asterisk:asterisk)") from None
    values: dict[str, str] = {}
    for match in _ASSIGNMENT.finditer(text):
        value = match["value"]
        # PHP unescapes only \\ and the quote itself in single-quoted strings; good enough for double quotes.
        value = re.sub(r"\\([\\'\"])", r"\1", value)
        values[match["key"]] = value
    return values


def freepbx_database_url(path: Path = FREEPBX_CONF) -> str:
    """A SQLAlchemy URL for FreePBX's CDR database with the credentials of ``path``."""
    conf = read_amp_conf(path)
    engine = conf.get("AMPDBENGINE", "mysql").lower()
    if engine not in ("mysql", "mariadb"):
        raise ConfigError(f"{path}: AMPDBENGINE is {engine!r}; only mysql/mariadb FreePBX databases are supported")
    user = conf.get("CDRDBUSER") or conf.get("AMPDBUSER")
    if not user:
        raise ConfigError(f"{path} has no $amp_conf['AMPDBUSER'] line")
    password = conf.get("CDRDBPASS") if conf.get("CDRDBUSER") else conf.get("AMPDBPASS", "")
    host = conf.get("CDRDBHOST") or conf.get("AMPDBHOST") or "localhost"
    port = conf.get("CDRDBPORT") or conf.get("AMPDBPORT") or ""
    database = conf.get("CDRDBNAME") or DEFAULT_CDR_DATABASE
    credentials = quote(user, safe="") + (":" + quote(password or "", safe="") if password else "")
    location = host + (f":{port}" if port.strip() else "")
    url = f"mysql+pymysql://{credentials}@{location}/{quote(database, safe='')}?charset=utf8mb4"
    socket = conf.get("AMPDBSOCK", "").strip()
    if host == "localhost" and socket:
        url += f"&unix_socket={quote(socket, safe='/')}"
    return url
