"""extensions_custom.conf and the Python side agree: the defaults they share, and which side
writes which variable."""

from __future__ import annotations

import re
from pathlib import Path

from voiceassist.asterisk import dialplan

REPO = Path(__file__).resolve().parents[1]
DIALPLAN = (REPO / "extensions_custom.conf").read_text()


def dialplan_default(name: str) -> str:
    found = re.search(rf'Set\({name}=\$\{{IF\(\$\["\$\{{{name}\}}" = ""\]\?([^:]+):\$\{{{name}\}}\)\}}\)', DIALPLAN)
    assert found, f"{name} has no default in extensions_custom.conf"
    return found[1]


def test_the_dialplans_defaults_are_the_listeners():
    for name, value in dialplan.DIALPLAN_DEFAULTS.items():
        assert float(dialplan_default(name)) == float(value), name


def test_every_variable_python_sets_is_read_by_the_dialplan():
    names = [value for key, value in vars(dialplan).items()
             if key.isupper() and isinstance(value, str) and value.startswith(("VA_", "VOICEASSIST_"))
             and key not in ("PING_VARIABLE",)]
    assert len(names) >= 9
    for name in names:
        assert "${" + name + "}" in DIALPLAN or f"({name}=" in DIALPLAN or name.startswith("VOICEASSIST_"), name


def test_the_shipped_fastagi_address_is_the_one_install_replaces():
    assert DIALPLAN.count(dialplan.SHIPPED_FASTAGI_URL) == 1
