"""Storage on SQLite, real MariaDB and real PostgreSQL: the DDL in sql/ and the migrations give the
models' schema; turns, history, call ends, concurrency, retention; FreePBX's credentials."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from voiceassist.storage.database_url import with_driver
from voiceassist.storage.freepbx import freepbx_database_url, read_amp_conf
from voiceassist.storage.migrate import head_revision, upgrade
from voiceassist.storage.retention import remove_files
from voiceassist.storage.schema import SCHEMA_REVISION
from voiceassist.storage.store import Store
from voiceassist.types import CallInfo, TurnRecord

ROOT = Path(__file__).resolve().parents[1]
SQL_FILE = {"sqlite": "sqlite.sql", "mysql": "mariadb.sql", "postgresql": "postgresql.sql"}


@pytest.fixture
def store(database_url):
    instance = Store(database_url)
    yield instance
    instance.engine.dispose()


def schema_of(engine: sa.Engine) -> dict:
    """Tables, columns (type, nullability), keys and indexes as the database reports them."""
    inspector = sa.inspect(engine)
    result = {}
    for table in sorted(inspector.get_table_names()):
        # Sorted: a migration appends columns where a fresh CREATE TABLE has them in the middle.
        columns = sorted((c["name"], str(c["type"]).split(" COLLATE")[0], c["nullable"]) for c in inspector.get_columns(table))
        result[table] = {
            "columns": columns,
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
                              # MariaDB reports unique constraints as unique indexes too
                              if not i.get("duplicates_constraint") and not i["unique"]),
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], (f.get("options") or {}).get("ondelete"))
                          for f in inspector.get_foreign_keys(table)),
        }
    return result


def fresh_like(url: str, request) -> str:
    """Another empty database on the same server as ``url``."""
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        return url.replace("voiceassist.db", "other.db")
    server = request.getfixturevalue("mariadb" if backend == "mysql" else "postgresql")
    return with_driver(server.url(server.create_database()))


def run_script(engine: sa.Engine, script: str) -> None:
    statements = [s.strip() for s in script.split(";\n")]
    with engine.begin() as conn:
        for statement in statements:
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--")).strip()
            if body:
                conn.exec_driver_sql(body)


def test_sql_ddl_files_create_exactly_the_models_schema(store, request):
    store.ensure_schema()
    backend = store.engine.url.get_backend_name()
    from_ddl = sa.create_engine(fresh_like(store.url, request))
    run_script(from_ddl, (ROOT / "sql" / SQL_FILE[backend]).read_text())
    assert schema_of(from_ddl) == schema_of(store.engine)
    with from_ddl.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM voiceassist_alembic_version").scalar() == SCHEMA_REVISION
    from_ddl.dispose()


def test_sql_files_are_what_the_schema_module_writes(tmp_path):
    from voiceassist.storage.schema import main

    main([str(tmp_path)])
    for name in SQL_FILE.values():
        assert (tmp_path / name).read_text() == (ROOT / "sql" / name).read_text(), f"regenerate sql/{name}"


def test_the_schema_revision_is_the_newest_migration():
    assert head_revision() == SCHEMA_REVISION


def test_migrations_from_the_first_release_reach_the_models_schema(store, request):
    store.ensure_schema()
    migrated = Store(fresh_like(store.url, request))
    assert upgrade(migrated, "0001") == (None, "0001")
    assert upgrade(migrated) == ("0001", SCHEMA_REVISION)
    assert schema_of(migrated.engine) == schema_of(store.engine)
    migrated.engine.dispose()


def test_an_unversioned_database_of_an_earlier_release_is_upgraded_without_losing_turns(tmp_path):
    # voiceassist 0.2 created its tables without Alembic and already had two of 0002's columns.
    url = f"sqlite:///{tmp_path}/old.db"
    old = Store(url)
    upgrade(old, "0001")
    with old.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE voiceassist_alembic_version")
        conn.exec_driver_sql("ALTER TABLE voiceassist_turns ADD COLUMN llm_first_ms INTEGER")
        conn.exec_driver_sql("ALTER TABLE voiceassist_turns ADD COLUMN first_audio_ms INTEGER")
        conn.exec_driver_sql("INSERT INTO voiceassist_calls (uniqueid, started_at) VALUES ('1.1', '2026-01-01 10:00:00')")
        conn.exec_driver_sql("INSERT INTO voiceassist_turns (call_id, turn_number, status, transcript, started_at) "
                             "VALUES (1, 1, 'ok', 'old question', '2026-01-01 10:00:01')")
    # The new code cannot write the missing column and says what to do.
    with pytest.raises(Exception, match="voiceassist db upgrade"):
        Store(url).add_turn(CallInfo("1.1"), TurnRecord(2, timings={"speech_to_audio": 5}))
    before, after = upgrade(Store(url))
    assert before.startswith("unversioned") and after == SCHEMA_REVISION
    fresh = Store(f"sqlite:///{tmp_path}/fresh.db")
    fresh.ensure_schema()
    assert schema_of(Store(url).engine) == schema_of(fresh.engine)
    assert Store(url).add_turn(CallInfo("1.1"), TurnRecord(2, timings={"speech_to_audio": 5}))
    assert [t["transcript"] for t in Store(url).call_rows("1.1")[1]] == ["old question", None]


def test_turns_history_and_call_end(store):
    call = CallInfo("1.1", linkedid="1.0", channel="PJSIP/1-1", caller_number="1001", caller_name="Al", extension="8008")
    store.add_turn(call, TurnRecord(1, transcript="q1", reply="a1", timings={"stt": 5, "total": 9, "speech_to_audio": 7}))
    store.add_turn(call, TurnRecord(2, status="llm_error", transcript="q2", error="boom"))
    store.add_turn(call, TurnRecord(3, transcript="q3", reply="a3 — ünïcode ✓ 😀"))
    assert [(e.question, e.answer) for e in store.history("1.1")] == [("q1", "a1"), ("q3", "a3 — ünïcode ✓ 😀")]
    store.end_call(call, "done")
    row, turns = store.call_rows("1.1")
    assert row["ended_at"] is not None and row["linkedid"] == "1.0" and row["end_state"] == "done"
    assert row["ended_at"].tzinfo is not None and row["ended_at"] >= row["started_at"]
    assert [t["status"] for t in turns] == ["ok", "llm_error", "ok"]
    assert turns[0]["stt_ms"] == 5 and turns[0]["total_ms"] == 9 and turns[0]["speech_to_audio_ms"] == 7
    listed = store.recent_calls()
    assert [(c["uniqueid"], c["turns"], c["answered"], c["status"]) for c in listed] == [("1.1", 3, 2, "ok")]


def test_storing_the_same_turn_twice_keeps_one_row(store):
    call = CallInfo("2.1")
    assert store.add_turn(call, TurnRecord(1, transcript="q", reply="a")) is True
    assert store.add_turn(call, TurnRecord(1, transcript="q", reply="a")) is False
    assert len(store.call_rows("2.1")[1]) == 1


WRITER = """
import sys
from voiceassist.storage.store import Store
from voiceassist.types import CallInfo, TurnRecord
store = Store(sys.argv[1])
n = sys.argv[2]
call = CallInfo(f"9.{n}", caller_number=n)
for turn in range(1, 4):
    store.add_turn(call, TurnRecord(turn, transcript=f"question {turn} of {n}", reply=f"answer {turn} to {n}"))
store.end_call(call, "done")
"""


def test_twenty_process_agi_writers_at_once_store_every_turn(database_url):
    # Twenty processes, as twenty process-AGI calls are, racing to create the schema of an empty
    # database and to write three turns each.
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, database_url, str(n)],
                                  stderr=subprocess.PIPE, text=True) for n in range(20)]
    errors = [err for p in processes for _, err in [p.communicate(timeout=120)] if p.returncode != 0]
    assert errors == []
    store = Store(database_url)
    calls = store.all_calls()
    assert len(calls) == 20 and all(c["turns"] == 3 and c["end_state"] == "done" for c in calls)
    for n in range(20):
        _, turns = store.call_rows(f"9.{n}")
        assert [t["reply"] for t in turns] == [f"answer {t} to {n}" for t in range(1, 4)]
    store.engine.dispose()


def test_prune_deletes_old_calls_their_turns_and_audio_only(store, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    old_dir, new_dir = tmp_path / "calls/1.old", tmp_path / "calls/1.new"
    for directory in (old_dir, new_dir):
        directory.mkdir(parents=True)
        for name in ("question-1.wav", "answer-1.ulaw"):
            (directory / name).write_bytes(b"x")
    long_ago = now - dt.timedelta(days=40)
    store.add_turn(CallInfo("1.old"), TurnRecord(1, started_at=long_ago, recording_path=str(old_dir / "question-1.wav"),
                                                 answer_path=str(old_dir / "answer-1.ulaw")))
    store.add_turn(CallInfo("1.new"), TurnRecord(1, recording_path=str(new_dir / "question-1.wav"),
                                                 answer_path=str(new_dir / "answer-1.ulaw")))
    cutoff = now - dt.timedelta(days=30)
    assert store.prune(cutoff, dry_run=True)[:2] == (1, 1)
    assert len(store.all_calls()) == 2
    calls, turns, paths = store.prune(cutoff)
    assert (calls, turns) == (1, 1)
    assert remove_files(paths, tmp_path / "calls") == 2
    assert not old_dir.exists()
    assert sorted(p.name for p in new_dir.iterdir()) == ["answer-1.ulaw", "question-1.wav"]
    assert [c["uniqueid"] for c in store.all_calls()] == ["1.new"]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.turns)).scalar() == 1


def test_an_unreachable_database_is_a_storage_error_within_the_timeout():
    from harness.rig.asterisk import free_port
    from voiceassist.errors import StorageError

    store = Store(with_driver(f"mysql://u:secret@127.0.0.1:{free_port()}/db"), timeout=2)
    with pytest.raises(StorageError) as caught:
        store.add_turn(CallInfo("1.1"), TurnRecord(1))
    assert "secret" not in str(caught.value) and "cannot store turn 1 of 1.1" in str(caught.value)


FREEPBX_CONF = """<?php
$amp_conf['AMPDBUSER'] = 'freepbxuser';
$amp_conf['AMPDBPASS'] = '{password}';
$amp_conf['AMPDBHOST'] = '127.0.0.1';
$amp_conf['AMPDBPORT'] = '{port}';
$amp_conf['AMPDBNAME'] = 'asterisk';
$amp_conf['AMPDBENGINE'] = 'mysql';
$amp_conf['datasource'] = ''; //for sqlite3
// $amp_conf['AMPDBUSER'] = 'commented-out';
require_once('/var/www/html/admin/bootstrap.php');
?>
"""


def test_freepbx_conf_is_parsed_without_running_php(tmp_path):
    path = tmp_path / "freepbx.conf"
    path.write_text(FREEPBX_CONF.format(password="it\\'s a p@ss", port="") + "$amp_conf[\"CDRDBNAME\"] = \"cdrs\";\n")
    conf = read_amp_conf(path)
    assert conf["AMPDBUSER"] == "freepbxuser" and conf["AMPDBPASS"] == "it's a p@ss" and conf["CDRDBNAME"] == "cdrs"
    url = sa.engine.make_url(freepbx_database_url(path))
    assert (url.drivername, url.username, url.password, url.host, url.database) == \
        ("mysql+pymysql", "freepbxuser", "it's a p@ss", "127.0.0.1", "cdrs")
    assert url.query["charset"] == "utf8mb4"


def test_database_freepbx_stores_in_asteriskcdrdb_beside_the_cdr_without_touching_it(mariadb, tmp_path):
    password = "5f1d2c3b4a5e6f708192a3b4c5d6e7f8"
    mariadb.sql("CREATE DATABASE IF NOT EXISTS asteriskcdrdb;"
                "CREATE TABLE IF NOT EXISTS asteriskcdrdb.cdr (uniqueid VARCHAR(150), linkedid VARCHAR(150), src VARCHAR(80));"
                "DELETE FROM asteriskcdrdb.cdr; INSERT INTO asteriskcdrdb.cdr VALUES ('1700000000.7', '1700000000.7', '1001');"
                f"CREATE USER IF NOT EXISTS 'freepbxuser'@'127.0.0.1' IDENTIFIED BY '{password}';"
                "GRANT ALL ON asteriskcdrdb.* TO 'freepbxuser'@'127.0.0.1';")
    conf = tmp_path / "freepbx.conf"
    conf.write_text(FREEPBX_CONF.format(password=password, port=mariadb.port))
    from voiceassist.config import load_config
    from voiceassist.storage.database_url import database_url

    config = load_config(environ={}, overrides={"database": {"url": "freepbx", "freepbx_conf": str(conf)}})
    store = Store(database_url(config.section("database")))
    call = CallInfo("1700000000.7", linkedid="1700000000.7", caller_number="1001")
    store.add_turn(call, TurnRecord(1, transcript="q", reply="a"))
    tables = mariadb.sql("SHOW TABLES", "asteriskcdrdb").split()
    assert sorted(tables) == ["cdr", "voiceassist_alembic_version", "voiceassist_calls", "voiceassist_turns"]
    assert mariadb.sql("SELECT uniqueid, src FROM cdr", "asteriskcdrdb").split() == ["1700000000.7", "1001"]
    # linked to the CDR by Asterisk's ids
    joined = mariadb.sql("SELECT cdr.src, t.reply FROM cdr JOIN voiceassist_calls c ON c.linkedid = cdr.linkedid "
                         "JOIN voiceassist_turns t ON t.call_id = c.id", "asteriskcdrdb")
    assert joined.split() == ["1001", "a"]
    store.engine.dispose()
