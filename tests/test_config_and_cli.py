"""Config layering and errors; the CLI's surface and its cost for process AGI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voiceassist.config import load_config
from voiceassist.errors import ConfigError
from voiceassist.providers import load_full_config


def test_defaults_apply_without_a_file(tmp_path):
    config = load_full_config(None, environ={})  # /etc/voiceassist/voiceassist.conf absent here
    assert config.section("gemini").get("model") == "gemini-2.5-flash"


def test_file_then_environment_override(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("[gemini]\nmodel => gemini-3.5-flash ; inline comment\n[google_speech]\ntimeout = 3\n")
    config = load_full_config(path, environ={"VOICEASSIST_GOOGLE_SPEECH_TIMEOUT": "4.5",
                                             "VOICEASSIST_GEMINI_TEMPERATURE": "0"})
    assert config.section("gemini").get("model") == "gemini-3.5-flash"
    assert config.section("google_speech").get_float("timeout") == 4.5
    assert config.section("gemini").get_float("temperature") == 0.0
    assert config.env_overrides == ("VOICEASSIST_GEMINI_TEMPERATURE", "VOICEASSIST_GOOGLE_SPEECH_TIMEOUT")


def test_bad_value_error_names_the_setting_and_file(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("[openai_tts]\ntimeout = soon\n")
    with pytest.raises(ConfigError, match=r"\[openai_tts\] timeout = 'soon' \(in .*va.conf\) must be a number"):
        load_full_config(path, environ={})


@pytest.mark.parametrize("line, allowed", [
    ("[general]\nmax_turns = five", "max_turns = 'five' .* must be a whole number from 1 to 100"),
    ("[general]\nkeep_recordings = maybe", "keep_recordings = 'maybe' .* must be yes or no"),
    ("[general]\nturn_deadline = nan", "turn_deadline = 'nan' .* must be a finite number from 0 to 300"),
    ("[general]\nplayback = stream", "playback = 'stream' .* must be one of pipelined, file"),
    ("[fastagi]\nport = 70000", "port = '70000' .* must be a whole number from 1 to 65535"),
    ("[privacy]\nredact = phone, cards", "redact = 'phone, cards' .* must be one of none, all, card, email, phone"),
    ("[gemini]\napi_key = \n[database]\ntimeout = -1", r"\[database\] timeout = '-1' .* from 0.5 to 60"),
])
def test_every_value_is_checked_when_the_config_is_loaded(tmp_path, line, allowed):
    """Not at first use inside a call: a bad value there used to leave the dialplan without VA_ANSWER."""
    path = tmp_path / "va.conf"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=allowed):
        load_full_config(path, environ={})


def test_lenient_loading_keeps_defaults_and_lists_the_problems(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("[general]\nmax_turns = five\nmax_call_seconds = 120\n[gemini]\napi_key = sk-very-secret\nretries = x\n")
    config = load_full_config(path, environ={}, strict=False)
    assert config.general.max_turns == 5 and config.section("general").get_int("max_turns") == 5
    assert config.general.max_call_seconds == 120
    assert len(config.problems) == 2 and "max_turns = 'five'" in config.problems[0]


def test_secret_values_are_never_echoed_in_errors(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("[fastagi]\nsecret = \n[database]\nurl = postgresql://u:hunter2@db/x\n[fastagi]\nallow = 10.0.0.0/8; rm\n")
    with pytest.raises(ConfigError) as refused:
        load_full_config(path, environ={})
    assert "[fastagi] allow" in str(refused.value) and "hunter2" not in str(refused.value)


def test_unknown_keys_and_sections_are_warnings(tmp_path):
    path = tmp_path / "va.conf"
    path.write_text("[general]\nmax_trns = 3\n[genral]\nlanguage = de-DE\n")
    config = load_full_config(path, environ={})
    assert any("unknown setting [general] max_trns" in w for w in config.warnings)
    assert any("unknown section [genral]" in w for w in config.warnings)


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
    code = ("import sys, voiceassist.cli, voiceassist.call.turn, voiceassist.asterisk.process_agi; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('google','openai','sqlalchemy','httpx2','grpc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_agi_outside_asterisk_explains_itself():
    out = subprocess.run([sys.executable, "-m", "voiceassist", "agi"], input="", capture_output=True, text=True)
    assert out.returncode == 1 and "AGI()" in out.stderr and "Traceback" not in out.stderr


def test_process_agi_with_broken_config_still_answers_the_caller(tmp_path):
    from harness.fake_asterisk import converse, fastagi_env

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
    from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
    from harness.helpers import config_for
    from harness.rig.asterisk import free_port
    from harness.servers import FastAGIProcess

    config = config_for(emulators, tmp_path)
    port = free_port()
    server = FastAGIProcess(config.path, port=port)
    wav = call_recording(tmp_path / "spool/voiceassist", "1.9")  # where the dialplan records it
    FakeAsterisk(port, fastagi_env("voiceassist", "1.9", ["turn", str(wav), "NOISE", "1"])).run()
    server.stop()
    log = (tmp_path / "voiceassist.log").read_text()
    assert "[TTS] 1.9" in log
    assert "test-gemini-key-123" not in log and "sk-test-openai-key-456" not in log


def test_process_agi_with_a_bad_value_plays_the_apology_and_stores_the_turn(emulators, tmp_path):
    """A typo in the config must not leave the caller in dead air: the turn runs no provider,
    the dialplan gets the apology and no second question, and the turn is stored with the problem."""
    import sqlite3
    import time

    from harness.fake_asterisk import agi_env, converse, speech_wav
    from harness.helpers import conf_text

    config_path = tmp_path / "voiceassist.conf"
    config_path.write_text(conf_text(emulators, data_dir=tmp_path, extra="[general]\nmax_turns = five\n"))
    uniqueid = "1700000000.7"
    (tmp_path / "spool" / "voiceassist" / uniqueid).mkdir(parents=True)
    recording = speech_wav(tmp_path / "spool" / "voiceassist" / uniqueid / "question-1.wav")
    env = agi_env(["turn", str(recording), "NOISE", "1", str(int(time.time())), "8008", uniqueid], uniqueid=uniqueid)
    code, commands, stderr = converse([sys.executable, "-m", "voiceassist", "--config", str(config_path), "agi"], env)
    assert code == 0 and "Traceback" not in stderr
    assert 'SET VARIABLE "VA_ANSWER" "custom/voiceassist/cant-answer"' in commands
    assert 'SET VARIABLE "VA_CONTINUE" "0"' in commands
    assert 'SET VARIABLE "VOICEASSIST_STATUS" "error"' in commands
    assert emulators["speech"].requests == [] and emulators["gemini"].requests == []
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        status, error = db.execute("SELECT status, error FROM voiceassist_turns").fetchone()
    assert status == "error" and "max_turns = 'five'" in error and "whole number from 1 to 100" in error


@pytest.mark.parametrize("line, message", [
    ("[general]\nkeep_recordings = maybe", "keep_recordings = 'maybe'"),
    ("[llm]\nprovider = gemini, chatgpt", "[llm] provider = 'chatgpt' is unknown"),
])
def test_serve_refuses_a_bad_config_before_it_listens(tmp_path, line, message):
    path = tmp_path / "va.conf"
    path.write_text(line + f"\n[logging]\nfile = {tmp_path}/va.log\n")
    out = subprocess.run([sys.executable, "-m", "voiceassist", "--config", str(path), "serve", "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "listening" not in out.stdout and "Traceback" not in out.stderr


def test_the_readme_lists_the_debian_packages_the_setup_installs():
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    setup = (repo / "tests/setup.sh").read_text()
    common = re.search(r"^packages=\((.*)\)$", setup, re.MULTILINE)[1].split()
    for_tests = re.search(r"^\s*tests\) packages\+=\((.*)\) ;;$", setup, re.MULTILINE)[1].split()
    readme = " ".join((repo / "README.md").read_text().split())
    listed = re.search(r"Debian packages `([^`]*)`", readme)[1].split()
    assert listed == common + for_tests
    out = subprocess.run(["bash", str(repo / "tests/setup.sh"), "everything"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage: tests/setup.sh [tests|main-job]" in out.stderr


def test_the_config_template_documents_every_setting_and_nothing_else():
    import re
    from pathlib import Path

    from voiceassist.config import defaults
    from voiceassist.providers import sections

    DEFAULTS = defaults(sections())

    template = (Path(__file__).resolve().parents[1] / "voiceassist/templates/voiceassist.conf").read_text()
    documented: dict[str, set[str]] = {}
    section = None
    for line in template.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line.strip()):
            section = header[1]
            documented[section] = set()
        elif section and (setting := re.match(r";?(\w+) =(?: |$)", line)):
            documented[section].add(setting[1])
    assert set(documented) == set(DEFAULTS)
    for name, keys in DEFAULTS.items():
        assert documented[name] == set(keys), name
    # and the template, as install writes it, loads without a problem or a warning
    import string
    import tempfile

    text = string.Template(template).substitute(answer_dir="/tmp/a", spool_dir="/tmp/s", outbox_dir="/tmp/o",
                                                 config_dir="/etc/voiceassist",
                                                 database_url="sqlite:////tmp/va.db", log_file="")
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as handle:
        handle.write(text)
        handle.flush()
        config = load_full_config(handle.name, environ={})
    assert config.warnings == () and config.problems == ()


def test_files_voiceassist_creates_are_for_the_asterisk_user_and_group_only(tmp_path):
    """Whatever umask Asterisk hands its AGIs (often 022), recordings, answers and the database
    are not world-readable: they hold callers' voices and words."""
    import os
    import stat

    config = tmp_path / "va.conf"
    config.write_text(f"[database]\nurl = sqlite:///{tmp_path}/data/va.db\nspool_dir = {tmp_path}/spool\n"
                      f"[logging]\nfile = {tmp_path}/logs/va.log\n")
    out = subprocess.run([sys.executable, "-m", "voiceassist", "--config", str(config), "db", "upgrade"],
                         capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0o022))
    assert out.returncode == 0, out.stderr
    for path in (tmp_path / "data", tmp_path / "data/va.db"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, (path, oct(path.stat().st_mode))
