"""No lost turns: the journal spools what the database cannot take and replays it exactly once;
text is made storable and personal data redacted before it is kept."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
from harness.helpers import conf_text
from harness.rig.asterisk import free_port
from harness.servers import FastAGIProcess
from voiceassist.config import load_config
from voiceassist.errors import StorageError
from voiceassist.storage.database_url import with_driver
from voiceassist.storage.journal import Journal
from voiceassist.storage.redaction import Redactor
from voiceassist.storage.store import Store
from voiceassist.types import CallInfo, TurnRecord


def journal_for(url: str, tmp_path, **privacy: str) -> Journal:
    config = load_config(environ={}, overrides={
        "database": {"url": url, "spool_dir": str(tmp_path / "spool"), "timeout": "2"},
        "privacy": {"redact": privacy.get("redact", "none")}})
    return Journal(config)


def count_turns(url: str, uniqueid: str) -> list[int]:
    store = Store(with_driver(url))
    try:
        return [t["turn_number"] for t in store.call_rows(uniqueid)[1]]
    finally:
        store.engine.dispose()


@pytest.fixture
def pg_url(postgresql):
    return postgresql.url(postgresql.create_database())


def test_turns_written_while_the_database_is_down_arrive_once_it_is_back(postgresql, pg_url, tmp_path):
    journal = journal_for(pg_url, tmp_path)
    call = CallInfo("5.1", caller_number="1001")
    assert journal.add_turn(call, TurnRecord(1, transcript="q1", reply="a1")) == "stored"
    postgresql.kill()
    try:
        assert journal.add_turn(call, TurnRecord(2, transcript="q2", reply="a2")) == "spooled"
        assert journal.end_call(call, "done") == "spooled"
        assert len(journal.spool) == 2
        # Replaying while the database is still down keeps everything, in order.
        result = journal.flush()
        assert result.pending == 2 and result.error and len(journal.spool) == 2
    finally:
        postgresql.start()
    result = journal.flush()
    assert (result.stored, result.pending, result.error) == (2, 0, None)
    assert journal.flush().stored == 0 and len(journal.spool) == 0
    row, turns = journal.store().call_rows("5.1")
    assert [(t["turn_number"], t["reply"]) for t in turns] == [(1, "a1"), (2, "a2")]
    assert row["end_state"] == "done" and row["ended_at"] is not None
    journal.store().engine.dispose()


def test_a_replay_after_a_lost_acknowledgement_stores_nothing_twice(tmp_path):
    journal = journal_for(f"sqlite:///{tmp_path}/va.db", tmp_path)
    call, turn = CallInfo("6.1"), TurnRecord(1, transcript="q", reply="a")
    journal.store().add_turn(call, turn)           # the write committed...
    journal.spool.add_turn(call, turn)             # ...but the writer never heard so, and spooled it
    result = journal.flush()
    assert (result.stored, result.duplicates) == (0, 1)
    assert len(journal.store().call_rows("6.1")[1]) == 1 and len(journal.spool) == 0


def test_two_replays_at_once_store_every_entry_exactly_once(tmp_path):
    journal = journal_for(f"sqlite:///{tmp_path}/va.db", tmp_path)
    for n in range(30):
        journal.spool.add_turn(CallInfo(f"7.{n % 3}"), TurnRecord(n // 3 + 1, transcript=f"q{n}"))
    other = journal_for(f"sqlite:///{tmp_path}/va.db", tmp_path)  # another process's journal
    results = []
    threads = [threading.Thread(target=lambda j=j: results.append(j.flush())) for j in (journal, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.stored for r in results) == 30 and sum(r.duplicates for r in results) == 0
    assert sorted(len(journal.store().call_rows(f"7.{n}")[1]) for n in range(3)) == [10, 10, 10]


def test_an_unreadable_spool_entry_is_set_aside_and_the_rest_replayed(tmp_path):
    journal = journal_for(f"sqlite:///{tmp_path}/va.db", tmp_path)
    journal.spool.add_turn(CallInfo("8.1"), TurnRecord(1, transcript="q"))
    (journal.spool.directory / "00000000000000000001-1-000000-8.1-turn9.json").write_text("{not json")
    result = journal.flush()
    assert (result.stored, result.rejected) == (1, 1)
    rejected = journal.spool.directory / "rejected"
    assert [p.name for p in rejected.glob("*.json")] == ["00000000000000000001-1-000000-8.1-turn9.json"]
    assert "JSONDecodeError" in next(rejected.glob("*.why")).read_text()


def test_spool_entries_are_whole_json_files_with_everything_the_database_gets(tmp_path):
    journal = journal_for(f"mysql://u:p@127.0.0.1:{free_port()}/nowhere", tmp_path)
    call = CallInfo("9.1", linkedid="9.0", channel="PJSIP/1-1", caller_number="1001", caller_name="Zoë")
    journal.add_turn(call, TurnRecord(1, transcript="q", reply="a", stt_provider="google", timings={"stt": 12}))
    [path] = journal.spool.pending_paths()
    entry = json.loads(path.read_text())
    assert entry["kind"] == "turn" and entry["call"]["caller_name"] == "Zoë" and entry["call"]["linkedid"] == "9.0"
    assert entry["turn"]["timings"] == {"stt": 12} and entry["turn"]["finished_at"]
    assert not list(journal.spool.directory.glob(".*.tmp"))


def test_a_database_that_hangs_costs_the_call_at_most_the_timeout(tmp_path):
    # Accepts connections and never says a word (a stuck server, a dropped route).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    try:
        journal = journal_for(f"mysql://u:p@127.0.0.1:{listener.getsockname()[1]}/db", tmp_path)
        started = time.monotonic()
        assert journal.add_turn(CallInfo("10.1"), TurnRecord(1, transcript="q")) == "spooled"
        assert time.monotonic() - started < 8
    finally:
        listener.close()


def test_when_neither_database_nor_spool_can_take_a_turn_the_error_says_both(tmp_path):
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    journal = journal_for(f"mysql://u:p@127.0.0.1:{free_port()}/nowhere", tmp_path)
    with pytest.raises(StorageError, match="turn 1 lost: cannot store turn 1 of 11.1.*cannot write to the spool"):
        journal.add_turn(CallInfo("11.1"), TurnRecord(1))


def test_history_includes_turns_waiting_in_the_spool(tmp_path):
    journal = journal_for(f"sqlite:///{tmp_path}/va.db", tmp_path)
    call = CallInfo("12.1")
    journal.add_turn(call, TurnRecord(1, transcript="q1", reply="a1"))
    journal.spool.add_turn(call, TurnRecord(2, transcript="q2", reply="a2"))
    journal.spool.add_turn(call, TurnRecord(3, status="llm_error", transcript="q3"))
    assert [(e.question, e.answer) for e in journal.history("12.1", call.channel)] == [("q1", "a1"), ("q2", "a2")]


def test_text_no_database_driver_accepts_is_stored_cleaned(postgresql, pg_url, tmp_path):
    journal = journal_for(pg_url, tmp_path)
    call = CallInfo("13.1", caller_number="10\x0001", caller_name="Bad \udcff bytes")
    assert journal.add_turn(call, TurnRecord(1, transcript="nul\x00inside", reply="surrogate \ud800 here")) == "stored"
    row, [turn] = journal.store().call_rows("13.1")
    assert row["caller_number"] == "1001" and row["caller_name"] == "Bad ? bytes"
    assert turn["transcript"] == "nulinside" and turn["reply"] == "surrogate ? here"
    journal.store().engine.dispose()


# -- redaction -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Call me on 555-123-4567 tomorrow", "Call me on [phone] tomorrow"),
    ("my number is +44 20 7946 0958.", "my number is [phone]."),
    ("(212) 555 0188 is the office", "[phone] is the office"),
    ("write to jane.doe+pbx@example.co.uk please", "write to [email] please"),
    ("it's john dot smith at example dot com", "it's [email]"),
    ("card 4111 1111 1111 1111 expires soon", "card [card] expires soon"),
    ("pay with 4111-1111-1111-1111", "pay with [card]"),
    ("We open at 8 and close at 18 on 2026-11-21, room 1204.", "We open at 8 and close at 18 on 2026-11-21, room 1204."),
])
def test_redaction_replaces_phone_numbers_emails_and_card_numbers(text, expected):
    assert Redactor.from_setting("all")(text) == expected


def test_redaction_of_only_some_kinds_and_a_clear_error_for_unknown_ones():
    assert Redactor.from_setting("email")("mail a@b.org or call 555-123-4567") == "mail [email] or call 555-123-4567"
    assert not Redactor.from_setting("none")
    with pytest.raises(Exception, match="unknown kind.*ssn"):
        Redactor.from_setting("phone, ssn")


def test_redacted_transcripts_and_replies_are_what_the_database_and_spool_keep(tmp_path):
    journal = journal_for(f"sqlite:///{tmp_path}/va.db", tmp_path, redact="all")
    call = CallInfo("14.1", caller_number="5551234567")
    journal.add_turn(call, TurnRecord(1, transcript="my card is 4111 1111 1111 1111", reply="I will call 555-123-4567"))
    journal.spool.directory.mkdir(parents=True, exist_ok=True)
    row, [turn] = journal.store().call_rows("14.1")
    assert (turn["transcript"], turn["reply"]) == ("my card is [card]", "I will call [phone]")
    assert row["caller_number"] == "5551234567"  # the call's own caller ID is the CDR's too
    broken = journal_for(f"mysql://u:p@127.0.0.1:{free_port()}/x", tmp_path / "b", redact="all")
    broken.add_turn(call, TurnRecord(1, transcript="mail me at a@b.org"))
    assert "a@b.org" not in broken.spool.pending_paths()[0].read_text()


# -- the database dies in the middle of a call ------------------------------------------------------
@pytest.mark.parametrize("server_name", ["mariadb", "postgresql"])
def test_database_killed_mid_call_every_turn_arrives_exactly_once_after_it_returns(
        server_name, request, emulators, tmp_path):
    server = request.getfixturevalue(server_name)
    url = server.url(server.create_database())
    config = tmp_path / "voiceassist.conf"
    config.write_text(conf_text(emulators, data_dir=tmp_path, extra=(
        f"[database]\nurl = {url}\ntimeout = 2\nflush_interval = 1\n[general]\nmax_turns = 5\n")))
    port = free_port()
    fastagi = FastAGIProcess(config, port=port)
    uniqueid = "1763740000.42"
    replies = []

    def turn(n: int) -> dict:
        emulators["gemini"].reply = lambda body, n=n: f"This is answer number {n}."
        replies.append(f"This is answer number {n}.")
        wav = call_recording(tmp_path / "spool/voiceassist", uniqueid, n)  # where the dialplan records it
        client = FakeAsterisk(port, fastagi_env("voiceassist", uniqueid, [
            "turn", str(wav), "NOISE", str(n), str(int(time.time())), "8008", uniqueid], port=port))
        client.run()
        return client.variables()

    try:
        assert turn(1)["VOICEASSIST_STATUS"] == "ok"
        server.kill()
        try:
            # The caller notices nothing: both turns are answered while the database is gone.
            assert turn(2)["VOICEASSIST_STATUS"] == "ok"
            assert turn(3)["VOICEASSIST_STATUS"] == "ok"
            FakeAsterisk(port, fastagi_env("voiceassist", uniqueid, [
                "hangup", "done", "", "3", "8008", uniqueid], port=port)).run()
            spooled = sorted(p.name.split("-")[-1] for p in (tmp_path / "db-spool").glob("*.json"))
            assert spooled == ["end.json", "turn2.json", "turn3.json"]
            # Turn 3's question went to the model with turn 2 (from the spool) as history.
            assert "This is answer number 2." in emulators["gemini"].requests[-1].body.decode()
        finally:
            server.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and list((tmp_path / "db-spool").glob("*.json")):
            time.sleep(0.2)
        time.sleep(1.5)  # another flush round: nothing may arrive twice
    finally:
        fastagi.stop()
    store = Store(with_driver(url))
    row, turns = store.call_rows(uniqueid)
    assert [(t["turn_number"], t["reply"]) for t in turns] == list(zip([1, 2, 3], replies))
    assert row["end_state"] == "done" and row["ended_at"] is not None
    store.engine.dispose()
    assert not list((tmp_path / "db-spool").glob("*.json"))
    assert "spooled to" in (tmp_path / "voiceassist.log").read_text()


@pytest.mark.parametrize("server", ["mariadb", "postgresql"])
def test_one_entry_the_database_refuses_does_not_hold_up_the_rest(request, server, tmp_path):
    """Strict MariaDB and PostgreSQL: an oversized caller name is fitted to its column, a record
    the database refuses for good goes to rejected/ with its reason, and replay goes on."""
    database = request.getfixturevalue(server)
    url = database.url(database.create_database())
    journal = journal_for(url, tmp_path)
    spool = journal.spool
    long_name = "Ünïcode caller " * 40  # 600 characters for a 255-character column
    spool.add_turn(CallInfo("7.1", caller_name=long_name, channel="PJSIP/" + "x" * 400, extension="8" * 200),
                   TurnRecord(1, transcript="q " * 5000, reply="long reply " * 2000))
    spool.add_turn(CallInfo("7.2"), TurnRecord(1, status=None))          # NOT NULL: a constraint
    spool.add_turn(CallInfo("7.3"), TurnRecord(2 ** 40, transcript="x"))  # out of the INTEGER range
    spool.add_turn(CallInfo("7.4"), TurnRecord(1, transcript="after them", reply="still stored"))
    spool.end_call(CallInfo("7.4"), "done", __import__("datetime").datetime.now(__import__("datetime").timezone.utc))
    result = journal.flush()
    assert (result.stored, result.rejected, result.pending, result.error) == (3, 2, 0, None), result
    assert len(spool) == 0
    rejected = sorted((spool.directory / "rejected").glob("*.json"))
    assert len(rejected) == 2
    reasons = [(path.parent / (path.name + ".why")).read_text() for path in rejected]
    assert all(reason.startswith("StorageRejected: cannot store turn") for reason in reasons), reasons
    store = Store(with_driver(url))
    try:
        call, turns = store.call_rows("7.1")
        assert call["caller_name"] == long_name[:255] and len(call["channel"]) == 255
        assert turns[0]["transcript"] == "q " * 5000 and turns[0]["reply"] == "long reply " * 2000
        call, turns = store.call_rows("7.4")
        assert turns[0]["reply"] == "still stored" and call["end_state"] == "done"
        assert store.call_rows("7.2")[0] is None
    finally:
        store.engine.dispose()
        journal.store().engine.dispose()
