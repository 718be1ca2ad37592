"""`voiceassist calls` and `voiceassist db`: what an admin reads and runs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from voiceassist.admin.reports import print_calls, stage_statistics
from voiceassist.cli import main
from voiceassist.storage.schema import SCHEMA_REVISION
from voiceassist.storage.spool import Spool
from voiceassist.storage.store import Store
from voiceassist.types import CallInfo, TurnRecord


@pytest.fixture
def setup(tmp_path):
    """A config file and a database with three calls."""
    db = tmp_path / "va.db"
    config = tmp_path / "voiceassist.conf"
    config.write_text(f"[database]\nurl = sqlite:///{db}\nspool_dir = {tmp_path}/spool\n"
                      f"[logging]\nfile = {tmp_path}/va.log\n")
    store = Store(f"sqlite:///{db}")
    now = dt.datetime.now(dt.timezone.utc)
    alice = CallInfo("1700000001.1", linkedid="1700000001.1", caller_number="1001", caller_name="Alice\tTab")
    for n, first_audio in enumerate([900, 1100, 1300], 1):
        store.add_turn(alice, TurnRecord(n, transcript=f"question {n}\nsecond line", reply=f"answer {n}",
                                         stt_provider="google", llm_provider="gemini", tts_provider="openai",
                                         started_at=now - dt.timedelta(minutes=10 - n),
                                         timings={"stt": 100 * n, "first_audio": first_audio, "total": 2000}))
    store.end_call(alice, "done")
    bob = CallInfo("1700000002.2", caller_number="1002")
    store.add_turn(bob, TurnRecord(1, status="llm_error", transcript="hm", error="ProviderTimeout: gemini",
                                   started_at=now - dt.timedelta(minutes=5), timings={"stt": 5000}))
    store.end_call(bob, "answering")
    old = CallInfo("1600000000.9", caller_number="1003")
    store.add_turn(old, TurnRecord(1, transcript="old", reply="older", started_at=now - dt.timedelta(days=100)))
    return config, store, tmp_path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_calls_lists_recent_calls_newest_first_as_plain_columns_when_piped(setup, capsys):
    config, _, _ = setup
    code, out, _ = run(capsys, "--config", str(config), "calls")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split("\t") == ["started", "uniqueid", "caller", "turns", "answered", "status", "ended",
                                    "avg first audio ms"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[1] for r in rows] == ["1700000002.2", "1700000001.1", "1600000000.9"]
    assert rows[1][2:] == ["1001 (Alice Tab)", "3", "3", "ok", "done", "1100"]
    assert rows[0][3:7] == ["1", "0", "llm_error", "answering"]
    assert rows[2][6] == "in progress"
    _, out, _ = run(capsys, "--config", str(config), "calls", "--days", "1", "--limit", "1")
    assert [line.split("\t")[1] for line in out.splitlines()[1:]] == ["1700000002.2"]


def test_calls_on_a_terminal_is_a_rich_table():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    print_calls([{"started_at": dt.datetime.now(dt.timezone.utc), "uniqueid": "1.1", "caller_number": "1001",
                  "caller_name": "", "turns": 2, "answered": 2, "status": "ok", "end_state": "done",
                  "avg_first_audio_ms": 800}], out)
    text = out.getvalue()
    assert "┏" in text and "1.1" in text and "most recent calls" in text


def test_calls_show_prints_the_conversation(setup, capsys):
    config, _, _ = setup
    code, out, _ = run(capsys, "--config", str(config), "calls", "show", "1700000001.1")
    assert code == 0
    assert "caller 1001 (Alice\tTab)" in out and "(done)" in out
    assert "  caller:    question 2 second line\n  assistant: answer 2\n" in out
    assert "providers google/gemini/openai  ms: stt 200  first_audio 1100  total 2000" in out
    code, _, err = run(capsys, "--config", str(config), "calls", "show", "nonesuch")
    assert code == 1 and "no call 'nonesuch'" in err


def test_calls_export_writes_every_turn_as_csv_or_json_lines(setup, capsys, tmp_path):
    config, _, _ = setup
    code, out, _ = run(capsys, "--config", str(config), "calls", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 5
    assert rows[-1]["uniqueid"] == "1700000002.2" and rows[-1]["error"] == "ProviderTimeout: gemini"
    assert rows[1]["transcript"] == "question 1\nsecond line"  # CSV quoting keeps the newline
    target = tmp_path / "turns.jsonl"
    code, _, err = run(capsys, "--config", str(config), "calls", "export", "--format", "jsonl", "--days", "1",
                       "-o", str(target))
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert code == 0 and "4 turns written" in err and len(records) == 4
    assert records[0]["caller_name"] == "Alice\tTab" and records[0]["first_audio_ms"] == 900
    assert records[0]["started_at"].endswith("+00:00")


def test_calls_stats_gives_percentiles_per_stage_of_answered_turns(setup, capsys):
    config, _, _ = setup
    code, out, _ = run(capsys, "--config", str(config), "calls", "stats", "--json")
    stats = {s["stage"]: s for s in json.loads(out)}
    assert code == 0
    assert stats["first_audio"] == {"stage": "first_audio", "what": "turn start → first audio", "turns": 3,
                                    "p50": 1100, "p90": 1300, "p99": 1300, "max": 1300}
    assert stats["stt"]["max"] == 300  # the failed turn's 5000 ms STT is not an answered turn
    code, out, _ = run(capsys, "--config", str(config), "calls", "stats")
    assert out.splitlines()[0].startswith("stage\twhat\tturns\tp50 ms")


def test_percentiles_use_the_nearest_rank():
    rows = [{"status": "ok", "stt_ms": v} for v in range(1, 101)]
    [stt] = stage_statistics(rows)
    assert (stt["p50"], stt["p90"], stt["p99"], stt["max"]) == (50, 90, 99, 100)


def test_db_upgrade_creates_or_migrates_and_status_reports_it(tmp_path, capsys):
    config = tmp_path / "voiceassist.conf"
    config.write_text(f"[database]\nurl = sqlite:///{tmp_path}/new.db\nspool_dir = {tmp_path}/spool\n"
                      f"[logging]\nfile = {tmp_path}/va.log\n")
    code, out, _ = run(capsys, "--config", str(config), "db", "upgrade")
    assert code == 0 and f"upgraded from empty to revision {SCHEMA_REVISION}" in out
    code, out, _ = run(capsys, "--config", str(config), "db", "upgrade")
    assert code == 0 and f"already at revision {SCHEMA_REVISION}" in out
    code, out, _ = run(capsys, "--config", str(config), "db", "status")
    assert code == 0 and f"schema    {SCHEMA_REVISION} (current)" in out and "0 turn(s)" in out


def test_db_flush_replays_the_spool(setup, capsys):
    config, store, tmp_path = setup
    Spool(tmp_path / "spool").add_turn(CallInfo("1700000003.3"), TurnRecord(1, transcript="q", reply="a"))
    code, out, _ = run(capsys, "--config", str(config), "db", "flush")
    assert code == 0 and out.strip() == "stored 1, already there 0, rejected 0, waiting 0"
    assert store.call_rows("1700000003.3")[1][0]["reply"] == "a"


def test_db_prune_deletes_calls_past_the_retention(setup, capsys):
    config, store, _ = setup
    with open(config, "a") as handle:
        handle.write("[privacy]\nretention_days = 0\naudio_retention_days = 0\n")
    code, out, _ = run(capsys, "--config", str(config), "db", "prune")
    assert code == 0 and "retention_days is 0" in out
    code, out, _ = run(capsys, "--config", str(config), "db", "prune", "--days", "30", "--dry-run")
    assert "would delete 1 calls, 1 turns" in out and len(store.all_calls()) == 3
    with open(config, "a") as handle:
        handle.write("[privacy]\nretention_days = 30\n")
    code, out, _ = run(capsys, "--config", str(config), "db", "prune")
    assert code == 0 and "deleted 1 calls, 1 turns" in out
    assert sorted(c["uniqueid"] for c in store.all_calls()) == ["1700000001.1", "1700000002.2"]


def test_a_database_that_cannot_be_reached_is_one_clear_line(tmp_path, capsys):
    from harness.rig.asterisk import free_port

    config = tmp_path / "voiceassist.conf"
    config.write_text(f"[database]\nurl = postgresql://va:secret@127.0.0.1:{free_port()}/va\ntimeout = 1\n"
                      f"[logging]\nfile = {tmp_path}/va.log\n")
    code, out, err = run(capsys, "--config", str(config), "calls")
    assert code == 1 and out == ""
    assert err.startswith("voiceassist: error: cannot list calls: postgresql+psycopg://va:***@127.0.0.1:")
    assert "secret" not in err and "Traceback" not in err and len(err.splitlines()) == 1


HOSTILE_NAME = "Eve\x1b[2J\x1b]0;owned\x07\x1b[1A\rturn 9  ok\nforged line\u202eevil"


def test_caller_data_cannot_drive_the_admins_terminal(setup, capsys):
    config, store, _ = setup
    hostile = CallInfo("1700000004.4", caller_number="\x1b[31m1004", caller_name=HOSTILE_NAME)
    store.add_turn(hostile, TurnRecord(1, transcript="hi\x1b]52;c;Y2xpcGJvYXJk\x07 there", reply="ok\x9b2J"))
    for args in (["calls"], ["calls", "show", "1700000004.4"]):
        code, out, _ = run(capsys, "--config", str(config), *args)
        assert code == 0 and "\x1b" not in out and "\x9b" not in out and "\u202e" not in out and "\r" not in out
        assert "forged line" in out and "Eve" in out
        assert not any(line.startswith("forged line") for line in out.splitlines())
    assert "caller:    hi there" in out


def test_csv_export_cells_never_start_a_spreadsheet_formula(setup, capsys):
    config, store, _ = setup
    store.add_turn(CallInfo("1700000005.5", caller_number="+15551234", caller_name='=HYPERLINK("http://x","y")'),
                   TurnRecord(1, transcript="@SUM(A1:A9)", reply="-2+3"))
    code, out, _ = run(capsys, "--config", str(config), "calls", "export", "--format", "csv")
    row = list(csv.DictReader(io.StringIO(out)))[-1]
    assert code == 0
    assert row["caller_name"] == "'=HYPERLINK(\"http://x\",\"y\")" and row["caller_number"] == "'+15551234"
    assert row["transcript"] == "'@SUM(A1:A9)" and row["reply"] == "'-2+3"
    assert row["turn_number"] == "1"


def test_a_turn_stored_twice_is_reported_as_a_duplicate(tmp_path):
    from voiceassist.config import load_config
    from voiceassist.storage.journal import Journal

    journal = Journal(load_config(environ={}, overrides={"database": {
        "url": f"sqlite:///{tmp_path}/va.db", "spool_dir": str(tmp_path / "spool")}}))
    call = CallInfo("1700000006.6")
    assert journal.add_turn(call, TurnRecord(1, transcript="q")) == "stored"
    assert journal.add_turn(call, TurnRecord(1, transcript="q again")) == "duplicate"


def test_a_missing_database_driver_names_the_extra_to_install(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "va.conf"
    config.write_text(f"[database]\nurl = mysql://va:pw@127.0.0.1/va\n[logging]\nfile = {tmp_path}/va.log\n")
    code = ("import sys; sys.modules['pymysql'] = None; from voiceassist.cli import main; "
            f"sys.exit(main(['--config', {str(config)!r}, 'calls']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "driver is not installed" in out.stderr and "pip install 'voiceassist[mysql]'" in out.stderr


def test_a_call_answered_then_left_in_silence_is_listed_as_ok(setup, capsys):
    config, store, _ = setup
    call = CallInfo("1700000007.7", caller_number="1007")
    store.add_turn(call, TurnRecord(1, transcript="hours?", reply="nine to five"))
    store.add_turn(call, TurnRecord(2, status="no_speech"))
    store.end_call(call, "done")
    code, out, _ = run(capsys, "--config", str(config), "calls")
    row = next(line.split("\t") for line in out.splitlines() if "1700000007.7" in line)
    assert row[3:7] == ["2", "1", "ok", "done"]


def test_calls_show_says_an_interrupted_answer_and_what_the_caller_heard(tmp_path, capsys):
    db = tmp_path / "va.db"
    config = tmp_path / "voiceassist.conf"
    config.write_text(f"[database]\nurl = sqlite:///{db}\nspool_dir = {tmp_path}/spool\n[logging]\nfile = {tmp_path}/va.log\n")
    store = Store(f"sqlite:///{db}")
    call = CallInfo("1700000009.9", caller_number="1009")
    store.add_turn(call, TurnRecord(1, transcript="opening hours?", reply="We open at eight. We close at six.",
                                    interrupted=True, heard_reply="We open at eight.", timings={"played": 1400}))
    store.end_call(call, "live-hangup")
    code, out, _ = run(capsys, "--config", str(config), "calls", "show", "1700000009.9")
    assert code == 0
    assert "interrupted by the caller after 1.4 s; heard: We open at eight." in out
    assert "(live-hangup)" in out
    assert store.history("1700000009.9")[0].answer == "We open at eight."
