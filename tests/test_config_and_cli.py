"""Config layering and errors; the CLI's surface and its cost for process AGI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voiceassist.config import load_config
from voiceassist.errors import ConfigError


def test_defaults_apply_without_a_file(tmp_path):
    config = load_config(None, environ={})  # /etc/asterisk/voiceassist.conf absent here
    assert config.section("gemini").get("model") == "gemini-2.5-flash"


def test_file_then_environment_override(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("[gemini]\nmodel => gemini-3.5-flash ; inline comment\n[google_speech]\ntimeout = 3\n")
    config = load_config(path, environ={"VOICEASSIST_GOOGLE_SPEECH_TIMEOUT": "4.5", "VOICEASSIST_GEMINI_TEMPERATURE": "0"})
    assert config.section("gemini").get("model") == "gemini-3.5-flash"
    assert config.section("google_speech").get_float("timeout") == 4.5
    assert config.section("gemini").get_float("temperature") == 0.0
    assert config.env_overrides == ("VOICEASSIST_GEMINI_TEMPERATURE", "VOICEASSIST_GOOGLE_SPEECH_TIMEOUT")


def test_bad_value_error_names_the_setting_and_file(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("[openai_tts]\ntimeout = soon\n")
    with pytest.raises(ConfigError, match=r"\[openai_tts\] timeout \(from .*va.conf\) must be a number"):
        load_config(path, environ={}).section("openai_tts").get_float("timeout")


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.conf", environ={})


def test_unparsable_file_is_an_error(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("no section header\n")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_config(path, environ={})


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "voiceassist", "--help"], capture_output=True, text=True, check=True)
    assert "agi" in out.stdout and "serve" in out.stdout


def test_process_agi_imports_no_provider_sdk_before_it_needs_one():
    """Process AGI starts a Python per call: SDKs and SQLAlchemy must load only when used."""
    code = ("import sys, voiceassist.cli, voiceassist.flow, voiceassist.process_agi; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('google','openai','sqlalchemy','httpx2','grpc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_agi_outside_asterisk_explains_itself():
    out = subprocess.run([sys.executable, "-m", "voiceassist", "agi"], input="", capture_output=True, text=True)
    assert out.returncode == 1 and "AGI()" in out.stderr and "Traceback" not in out.stderr


def test_process_agi_with_broken_config_still_answers_the_caller(tmp_path):
    from tests.fake_asterisk import converse, fastagi_env

    path = tmp_path / "va.conf"
    path.write_text("[general\n")
    env = fastagi_env("voiceassist", "1.2", ["turn", "/nonexistent.wav", "NOISE", "1"])
    # As Asterisk: each reply after its command (replies sent ahead would be refused as data
    # waiting after the environment block).
    code, commands, stderr = converse([sys.executable, "-m", "voiceassist", "--config", str(path), "agi"], env)
    assert code == 0, stderr
    assert 'SET VARIABLE "VA_ANSWER" "custom/voiceassist/cant-answer"' in commands
    assert any("cannot be parsed" in command for command in commands)


def test_configured_secrets_are_redacted_from_the_log(tmp_path):
    import logging

    from voiceassist.logs import RedactSecrets

    record = logging.LogRecord("voiceassist", logging.ERROR, __file__, 1,
                               "request failed for key %s", ("sk-live-abcdef123456",), None)
    RedactSecrets(["sk-live-abcdef123456"]).filter(record)
    assert record.getMessage() == "request failed for key ***"


def test_the_log_file_never_holds_the_api_keys(emulators, tmp_path):
    """A full turn over FastAGI, then the log is searched for the configured keys."""
    from tests.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
    from tests.helpers import config_for
    from tests.rig.asterisk import free_port
    from tests.conftest import FastAGIProcess

    config = config_for(emulators, tmp_path)
    port = free_port()
    server = FastAGIProcess(config.path, port=port)
    wav = call_recording(tmp_path / "spool/voiceassist", "1.9")  # where the dialplan records it
    FakeAsterisk(port, fastagi_env("voiceassist", "1.9", ["turn", str(wav), "NOISE", "1"])).run()
    server.stop()
    log = (tmp_path / "voiceassist.log").read_text()
    assert "[TTS] 1.9" in log
    assert "test-gemini-key-123" not in log and "sk-test-openai-key-456" not in log
