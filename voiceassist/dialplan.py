"""The dialplan contract: what ``extensions_custom.conf`` and the Python side must agree on.

One home for the values both sides use, so they cannot drift apart: the FastAGI address the
dialplan dials (written into the installed block from ``[fastagi]``, never typed twice).
"""

from __future__ import annotations

from urllib.parse import quote

from .config import Config

# The address written in the shipped extensions_custom.conf; `voiceassist install` replaces it
# with the configured one (fastagi_url) in the block it installs.
SHIPPED_FASTAGI_URL = "agi://127.0.0.1:4573/voiceassist"
FASTAGI_ROUTE = "voiceassist"


def fastagi_url(config: Config, route: str = FASTAGI_ROUTE) -> str:
    """The ``agi://`` URL the dialplan uses to reach ``voiceassist serve`` as configured:
    ``[fastagi] host``/``port``, plus ``?secret=`` when ``[fastagi] secret`` is set."""
    section = config.section("fastagi")
    host = section.get("host")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback from this machine
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6, as Asterisk parses agi://[addr]:port
    url = f"agi://{host}:{section.get_int('port')}/{route}"
    secret = section.get("secret", "")
    return f"{url}?secret={quote(secret, safe='')}" if secret else url
