"""Storage: the SQLite schema in sql/ matches the models; turns, history and call end are stored."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from voiceassist.storage import Store
from voiceassist.storage_types import CallInfo, TurnRecord

SQL = Path(__file__).resolve().parents[1] / "sql"


def schema(db: sqlite3.Connection) -> dict[str, list[tuple]]:
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {t: [tuple(c) for c in db.execute(f"PRAGMA table_info({t})")]
            + sorted(tuple(i[1:3]) for i in db.execute(f"PRAGMA index_list({t})")) for t in tables}


def test_sql_sqlite_ddl_matches_the_models(tmp_path):
    Store(f"sqlite:///{tmp_path}/models.db").history("warm-up")  # creates the tables
    from_ddl = sqlite3.connect(tmp_path / "ddl.db")
    from_ddl.executescript((SQL / "sqlite.sql").read_text())
    assert schema(from_ddl) == schema(sqlite3.connect(tmp_path / "models.db"))


def test_turns_history_and_call_end(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/va.db")
    call = CallInfo("1.1", linkedid="1.0", channel="PJSIP/1-1", caller_number="1001", caller_name="Al", extension="8008")
    store.add_turn(call, TurnRecord(1, transcript="q1", reply="a1", timings={"stt": 5, "total": 9}))
    store.add_turn(call, TurnRecord(2, status="llm_error", transcript="q2", error="boom"))
    store.add_turn(call, TurnRecord(3, transcript="q3", reply="a3"))
    assert [(e.question, e.answer) for e in store.history("1.1")] == [("q1", "a1"), ("q3", "a3")]
    store.end_call(call)
    row, turns = store.call_rows("1.1")
    assert row["ended_at"] is not None and row["linkedid"] == "1.0"
    assert [t["status"] for t in turns] == ["ok", "llm_error", "ok"]
    assert turns[0]["stt_ms"] == 5 and turns[0]["total_ms"] == 9


def test_twenty_concurrent_writers_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/va.db"
    Store(url).history("create")
    errors = []

    def writer(n: int) -> None:
        try:
            store = Store(url)  # one engine per "process", as process AGI has
            call = CallInfo(f"9.{n}", caller_number=str(n))
            for turn in range(1, 4):
                store.add_turn(call, TurnRecord(turn, transcript="q", reply="a"))
            store.end_call(call)
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(Store(url).all_calls()) == 20
