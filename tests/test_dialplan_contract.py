"""extensions_custom.conf and the Python side agree: the defaults they share, and which side
writes which variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voiceassist.asterisk import dialplan
from voiceassist.config import load_config
from voiceassist.errors import RequestError

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
             and key not in ("PING_VARIABLE", "MEDIA_ID")]  # these two are read by our own servers
    assert len(names) >= 9
    for name in names:
        assert "${" + name + "}" in DIALPLAN or f"({name}=" in DIALPLAN or name.startswith("VOICEASSIST_"), name


def test_the_shipped_fastagi_addresses_are_the_ones_install_replaces():
    # 8008's FastAGI context, and the real-time flow's route for a message and the call's end
    assert DIALPLAN.count(dialplan.SHIPPED_FASTAGI_URL + ")") == 2
    assert DIALPLAN.count(dialplan.SHIPPED_LIVE_URL + ")") == 1
    config = load_config(environ={}, overrides={"fastagi": {"port": "4599", "secret": "s3cr&t"}})
    configured = dialplan.with_configured_urls(DIALPLAN, config)
    assert "agi://127.0.0.1:4599/voiceassist?secret=s3cr%26t)" in configured
    assert "agi://127.0.0.1:4599/voiceassist-live?secret=s3cr%26t)" in configured
    assert "4573" not in configured


def test_the_media_connection_is_opened_as_each_transport_needs():
    call_id = "0123456789abcdef0123456789abcdef"
    assert dialplan.media_application("audiosocket", call_id, "127.0.0.1", 4575, wideband=False,
                                      websocket_client="va") == (
        "AudioSocket", "01234567-89ab-cdef-0123-456789abcdef,127.0.0.1:4575")
    assert dialplan.media_application("audiosocket", call_id, "::1", 4575, wideband=True, websocket_client="va") == (
        "Dial", "AudioSocket/[::1]:4575/01234567-89ab-cdef-0123-456789abcdef/c(slin16)")
    assert dialplan.media_application("websocket", call_id, "127.0.0.1", 4576, wideband=True, websocket_client="va") == (
        "Dial", f"WebSocket/va/c(slin16)f(json)v(call={call_id})")
    with pytest.raises(RequestError):
        dialplan.media_application("audiosocket", "x,evil", "127.0.0.1", 4575, wideband=False, websocket_client="va")


def test_each_fastagi_worker_has_its_own_websocket_connection():
    """Worker k's media server listens on websocket_port + k: its calls dial their own section."""
    assert dialplan.websocket_connection("voiceassist", 0) == "voiceassist"
    assert dialplan.websocket_connection("voiceassist", 1) == "voiceassist-1"
    call_id = "0123456789abcdef0123456789abcdef"
    assert dialplan.media_application("websocket", call_id, "127.0.0.1", 4582, wideband=False,
                                      websocket_client=dialplan.websocket_connection("va", 1)) == (
        "Dial", f"WebSocket/va-1/c(slin)f(json)v(call={call_id})")


def test_wideband_only_for_codecs_that_carry_it():
    assert dialplan.is_wideband("(g722)") and dialplan.is_wideband("(opus|ulaw)")
    assert not dialplan.is_wideband("(ulaw)") and not dialplan.is_wideband("(alaw|gsm)") and not dialplan.is_wideband("")
