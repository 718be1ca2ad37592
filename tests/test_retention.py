"""Disk use is bounded: recordings and answers, then whole calls, pruned by age, never beyond our files."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import pytest

from harness.helpers import config_for
from voiceassist.call.assistant import Assistant
from voiceassist.cli import main
from voiceassist.storage import retention
from voiceassist.types import CallInfo, TurnRecord

DAY = 86400


def age(path, days: float) -> None:
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp), follow_symlinks=False)


@pytest.fixture
def answers(tmp_path):
    """An answer directory with an old call, a new call, a stranger's file and a planted link."""
    root = tmp_path / "spool" / "voiceassist"
    old, new = root / "1700000000.1", root / "1790000000.2"
    for directory in (old, new):
        directory.mkdir(parents=True)
        for name in ("question-1.wav", "answer-1.ulaw", "answer-1-part2.ulaw", ".tmp-x1y2.ulaw"):
            (directory / name).write_bytes(b"\xff" * 1000)
    (old / "notes.txt").write_text("the admin's own file")
    decoy = tmp_path / "decoy.wav"
    decoy.write_bytes(b"not ours")
    (old / "question-2.wav").symlink_to(decoy)
    for path in [*old.iterdir(), decoy]:
        age(path, 40)
    return root, old, new, decoy


def test_audio_older_than_its_retention_is_pruned_and_nothing_else(emulators, tmp_path, answers):
    root, old, new, decoy = answers
    assistant = Assistant(config_for(emulators, tmp_path))
    report = retention.prune(assistant.journal(), str(root), days=0, audio_days=30)
    assert report.audio_files == 4 and report.audio_bytes == 4000 and report.storage_error is None
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "question-2.wav"]  # not ours; a link
    assert decoy.read_bytes() == b"not ours"
    assert len(list(new.iterdir())) == 4


def test_old_calls_go_with_their_audio_and_stored_paths_never_reach_outside(emulators, tmp_path, answers):
    root, old, new, decoy = answers
    assistant = Assistant(config_for(emulators, tmp_path))
    store = assistant.journal().store()
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)
    # A turn that names a file outside the answer directory (a forged spool entry, say).
    store.add_turn(CallInfo("1700000000.1"), TurnRecord(1, started_at=long_ago, answer_path=str(decoy),
                                                        recording_path=str(old / "question-1.wav")))
    store.add_turn(CallInfo("1790000000.2"), TurnRecord(1, answer_path=str(new / "answer-1.ulaw")))
    report = retention.prune(assistant.journal(), str(root), days=365, audio_days=0)
    assert (report.calls, report.turns, report.audio_files) == (1, 1, 1)
    assert decoy.exists() and not (old / "question-1.wav").exists()
    assert [c["uniqueid"] for c in store.all_calls()] == ["1790000000.2"]


def test_stored_turns_forget_audio_that_was_pruned(emulators, tmp_path, answers):
    root, old, new, _ = answers
    assistant = Assistant(config_for(emulators, tmp_path))
    store = assistant.journal().store()
    forty_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)
    store.add_turn(CallInfo("1700000000.1"), TurnRecord(1, started_at=forty_days_ago, answer_path=str(old / "answer-1.ulaw")))
    retention.prune(assistant.journal(), str(root), days=365, audio_days=30)
    _, turns = store.call_rows("1700000000.1")
    assert turns[0]["answer_path"] is None and turns[0]["recording_path"] is None


def test_a_database_that_is_down_does_not_stop_the_audio_prune(tmp_path, answers, capsys):
    from harness.rig.asterisk import free_port

    root, old, _, _ = answers
    config = tmp_path / "va.conf"
    config.write_text(f"[general]\nanswer_dir = {root}\n[database]\nurl = postgresql://va:pw@127.0.0.1:{free_port()}/va\n"
                      f"timeout = 1\nspool_dir = {tmp_path}/db-spool\n[logging]\nfile = {tmp_path}/va.log\n")
    code = main(["--config", str(config), "db", "prune"])
    out, err = capsys.readouterr()
    assert code == 1 and "deleted 4 recordings and answers older than 30 days" in out
    assert err.startswith("voiceassist: database: cannot prune old calls") and "Traceback" not in err
    assert not (old / "answer-1.ulaw").exists()


def test_the_fastagi_server_prunes_once_a_day(emulators, tmp_path, answers, monkeypatch):
    from voiceassist.asterisk import fastagi

    root, old, _, _ = answers
    monkeypatch.setattr(retention, "FIRST_PRUNE_AFTER", 0.2)
    assistant = Assistant(config_for(emulators, tmp_path, extra=f"[general]\nanswer_dir = {root}\n"))
    servers = []
    thread = threading.Thread(target=fastagi.serve, args=(assistant, "127.0.0.1", 0),
                              kwargs={"ready": servers.append}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while (old / "answer-1.ulaw").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    servers[0].shutdown()
    thread.join(10)
    assert not (old / "answer-1.ulaw").exists(), "the server did not prune the old answer"


def test_worker_processes_take_turns_at_the_prune(emulators, tmp_path, answers):
    import fcntl

    root, old, _, _ = answers
    assistant = Assistant(config_for(emulators, tmp_path))
    pruner = retention.DailyPrune(assistant.journal(), str(root), 0, 30)
    lock = tmp_path / "db-spool" / ".prune.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert pruner.prune_once() is None and (old / "answer-1.ulaw").exists()
    assert pruner.prune_once().audio_files == 4
