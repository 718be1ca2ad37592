"""Storage of calls and turns with SQLAlchemy Core: SQLite (default), MariaDB/MySQL, PostgreSQL.

SQLAlchemy is imported here and nowhere on the AGI path before the first database use, so an AGI
process that cannot reach the database still answers the caller (the journal spools the turn).
Tables carry a prefix (``voiceassist_``) so they can live beside FreePBX's own tables.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from ..errors import StorageError, StorageRejected
from ..system.ownership import give_to_directory_owner
from ..types import CallInfo, Exchange, TurnRecord
from .schema import SCHEMA_REVISION, TIMED_STAGES, TURN_STATUSES, build_metadata

__all__ = ["Store", "TIMED_STAGES", "TURN_STATUSES", "make_engine"]

T = TypeVar("T")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Store:
    """Calls and turns in one SQL database; the tables are created on first use of an empty database.

    Args:
        url: a SQLAlchemy URL (``sqlite:///path``, ``mysql+pymysql://...``, ``postgresql+psycopg://...``).
        prefix: table name prefix.
        timeout: seconds a connection, lock wait or statement may take before the operation fails
            with :class:`StorageError` (the journal then spools the turn).
    """

    def __init__(self, url: str, prefix: str = "voiceassist_", timeout: float = 5.0) -> None:
        self.url = url
        self.prefix = prefix
        self.metadata = build_metadata(prefix)
        self.calls = self.metadata.tables[f"{prefix}calls"]
        self.turns = self.metadata.tables[f"{prefix}turns"]
        self.versions = self.metadata.tables[f"{prefix}alembic_version"]
        try:
            self.engine = make_engine(url, timeout)
        except ImportError as exc:
            backend = sa.engine.make_url(url).get_backend_name()
            extra = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgresql"}.get(backend, "all")
            raise StorageError(f"the {backend} database driver is not installed ({exc.name or exc}): "
                               f"pip install 'voiceassist[{extra}]' into voiceassist's venv") from None
        except Exception as exc:
            raise StorageError(f"database URL {redact_url(url)} is not usable: {exc}") from None
        self._ready = False

    @property
    def where(self) -> str:
        """The URL without its password, for messages."""
        return redact_url(self.url)

    # -- connection and schema ----------------------------------------------------------------
    def _failure(self, doing: str, exc: sa.exc.SQLAlchemyError) -> StorageError:
        detail = getattr(exc, "orig", None) or exc
        # One line: some drivers (psycopg) add hint lines, and this ends up in logs and the CLI.
        message = f"{doing}: {self.where}: {type(detail).__name__}: {' '.join(str(detail).split())}"
        if _refused_record(exc):
            return StorageRejected(message[:2000])
        if not _schema_mismatch(exc):
            return StorageError(message[:2000])  # e.g. unreachable: asking for the revision would wait again
        revision = self._revision_quietly()
        if revision and revision != SCHEMA_REVISION:
            message += (f" (the database schema is at revision {revision}, this version of voiceassist "
                        f"needs {SCHEMA_REVISION}: run `voiceassist db upgrade`)")
        return StorageError(message[:2000])

    def _revision_quietly(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                revision = self._revision(conn)
                if revision is None and sa.inspect(conn).has_table(self.calls.name):
                    return "none (made by voiceassist 0.2 or older)"
                return revision
        except Exception:
            return None

    def _revision(self, conn: Any) -> str | None:
        if not sa.inspect(conn).has_table(self.versions.name):
            return None
        revision = conn.execute(sa.select(self.versions.c.version_num)).scalar()
        return None if revision is None else str(revision)

    def ensure_schema(self) -> None:
        """Create the tables in an empty database and mark it as the current revision.

        Safe when many processes do it at once: every CREATE is ``IF NOT EXISTS`` and runs
        whenever the revision row is missing (a process that finds the first table made by
        another one, still busy with the rest, makes sure of the rest itself), and the revision
        row's primary key lets only one stamp win. A database whose tables predate revisions
        (voiceassist 0.2) is not stamped: ``voiceassist db upgrade`` brings it forward.
        """
        if self._ready:
            return
        try:
            self._create_missing()
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError):
            # PostgreSQL's CREATE TABLE IF NOT EXISTS can still collide with a concurrent one; if
            # the tables are there now, another process made them.
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(self.turns.name):
                    raise
        self._ready = True

    def _create_missing(self) -> None:
        with self.engine.begin() as conn:
            inspector = sa.inspect(conn)
            empty = not inspector.has_table(self.calls.name)
            if not empty and inspector.has_table(self.versions.name) and \
                    conn.execute(sa.select(sa.func.count()).select_from(self.versions)).scalar():
                return
            for table in self.metadata.sorted_tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            if not empty:
                return  # an unversioned database of an earlier release, or another process's stamp to come
            try:
                with conn.begin_nested():
                    conn.execute(self.versions.insert().values(version_num=SCHEMA_REVISION))
            except sa.exc.IntegrityError:
                pass  # another process stamped it first

    def _transaction(self, doing: str, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` in one transaction, retried when the database says a retry
        will do (deadlock, lock wait, a table created by a concurrent process); any other
        database error is a :class:`StorageError` that says what failed."""
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                self.ensure_schema()
                with self.engine.begin() as conn:
                    return work(conn)
            except sa.exc.SQLAlchemyError as exc:
                if attempt == TRANSIENT_ATTEMPTS or not _transient(exc):
                    raise self._failure(doing, exc) from None
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def schema_revision(self) -> str | None:
        """The revision the database is at (``None``: no voiceassist tables or no revision row)."""
        try:
            with self.engine.connect() as conn:
                return self._revision(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise self._failure("cannot read the schema revision", exc) from None

    # -- writing ------------------------------------------------------------------------------
    @staticmethod
    def _fit(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` cut to their columns' lengths (a long caller name must not cost the turn;
        strict MariaDB and PostgreSQL refuse it whole). Long text goes to Text columns and stays
        whole; the call's ``uniqueid`` is never cut (two calls must not become one)."""
        fitted = dict(values)
        for name, value in values.items():
            length = getattr(table.c[name].type, "length", None) if name in table.c else None
            if isinstance(value, str) and length and len(value) > length and name != "uniqueid":
                fitted[name] = value[:length]
        return fitted

    def _call_id(self, conn: Any, call: CallInfo, started_at: dt.datetime | None = None) -> int:
        row = conn.execute(sa.select(self.calls.c.id).where(self.calls.c.uniqueid == call.uniqueid)).first()
        if row:
            return int(row[0])
        try:
            with conn.begin_nested():
                result = conn.execute(self.calls.insert().values(self._fit(self.calls, dict(
                    uniqueid=call.uniqueid, linkedid=call.linkedid or None, channel=call.channel,
                    caller_number=call.caller_number, caller_name=call.caller_name,
                    extension=call.extension, started_at=started_at or _utcnow()))))
                return int(result.inserted_primary_key[0])
        except sa.exc.IntegrityError:  # another process of the same call inserted it first
            row = conn.execute(sa.select(self.calls.c.id).where(self.calls.c.uniqueid == call.uniqueid)).one()
            return int(row[0])

    def add_turn(self, call: CallInfo, turn: TurnRecord) -> bool:
        """Store ``turn`` (creating the call row on its first turn).

        Returns False when the call already has this turn number: storing the same turn twice
        (a spool replay after a write whose acknowledgement was lost) leaves one row.
        """
        values = {
            "turn_number": turn.turn_number, "status": turn.status, "error": turn.error,
            "transcript": turn.transcript, "stt_confidence": turn.stt_confidence, "reply": turn.reply,
            "recording_path": turn.recording_path, "answer_path": turn.answer_path,
            "stt_provider": turn.stt_provider, "llm_provider": turn.llm_provider, "tts_provider": turn.tts_provider,
            "interrupted": bool(turn.interrupted), "heard_reply": turn.heard_reply,
            "action": turn.action, "action_target": turn.action_target, "speaker": turn.speaker,
            "language": turn.language,
            "started_at": turn.started_at, "finished_at": turn.finished_at or _utcnow(),
            **{f"{stage}_ms": turn.timings.get(stage) for stage in TIMED_STAGES},
        }
        def work(conn: Any) -> bool:
            values["call_id"] = call_id = self._call_id(conn, call, turn.started_at)
            if self._has_turn(conn, call_id, turn.turn_number):
                return False
            try:
                with conn.begin_nested():
                    conn.execute(self.turns.insert().values(self._fit(self.turns, values)))
            except sa.exc.IntegrityError:
                if self._has_turn(conn, call_id, turn.turn_number):
                    return False  # a concurrent replay stored it a moment ago
                raise
            return True

        return self._transaction(f"cannot store turn {turn.turn_number} of {call.uniqueid}", work)

    def _has_turn(self, conn: Any, call_id: int, turn_number: int) -> bool:
        return conn.execute(sa.select(self.turns.c.id).where(
            self.turns.c.call_id == call_id, self.turns.c.turn_number == turn_number)).first() is not None

    def end_call(self, call: CallInfo, end_state: str | None = None, ended_at: dt.datetime | None = None) -> None:
        """Record that the call ended (creating its row if no turn was stored); idempotent."""
        def work(conn: Any) -> None:
            call_id = self._call_id(conn, call, ended_at)
            conn.execute(self.calls.update().where(self.calls.c.id == call_id)
                         .values(self._fit(self.calls, dict(ended_at=ended_at or _utcnow(), end_state=end_state or None))))

        self._transaction(f"cannot mark call {call.uniqueid} ended", work)

    def set_summary(self, uniqueid: str, summary: str) -> None:
        """The call's summary (its row exists: the call has ended)."""
        def work(conn: Any) -> None:
            conn.execute(self.calls.update().where(self.calls.c.uniqueid == uniqueid)
                         .values(self._fit(self.calls, {"summary": summary})))

        self._transaction(f"cannot store the summary of call {uniqueid}", work)

    # -- reading ------------------------------------------------------------------------------
    def earlier_calls(self, caller_number: str, since: dt.datetime, before_uniqueid: str,
                      limit: int) -> list[tuple[dt.datetime, str]]:
        """A caller's earlier calls since ``since`` (newest first, at most ``limit``): when, and
        what they were about (the summary, else the caller's questions)."""
        def work(conn: Any) -> list[tuple[dt.datetime, str]]:
            calls = conn.execute(
                sa.select(self.calls.c.id, self.calls.c.started_at, self.calls.c.summary)
                .where(self.calls.c.caller_number == caller_number, self.calls.c.started_at >= since,
                       self.calls.c.uniqueid != before_uniqueid)
                .order_by(self.calls.c.started_at.desc()).limit(limit)).all()
            found = []
            for call_id, started_at, summary in calls:
                if not summary:
                    asked = conn.execute(sa.select(self.turns.c.transcript).where(
                        self.turns.c.call_id == call_id, self.turns.c.transcript.is_not(None))
                        .order_by(self.turns.c.turn_number).limit(5)).scalars().all()
                    summary = "The caller asked: " + " / ".join(asked) if asked else ""
                if summary:
                    found.append((started_at, summary))
            return found

        return self._transaction("cannot read the caller's earlier calls", work)

    def history(self, uniqueid: str) -> list[Exchange]:
        """The call's answered turns, oldest first; an interrupted answer as far as the caller heard it."""
        heard = sa.case((self.turns.c.interrupted, sa.func.coalesce(self.turns.c.heard_reply, "")),
                        else_=self.turns.c.reply)
        query = (sa.select(self.turns.c.transcript, heard)
                 .join(self.calls, self.calls.c.id == self.turns.c.call_id)
                 .where(self.calls.c.uniqueid == uniqueid, self.turns.c.status == "ok")
                 .order_by(self.turns.c.turn_number))
        return self._transaction("cannot read history", lambda conn: [
            Exchange(question=q or "", answer=a or "") for q, a in conn.execute(query)])

    def call_rows(self, uniqueid: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The call row and its turn rows."""
        def work(conn: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            call = conn.execute(sa.select(self.calls).where(self.calls.c.uniqueid == uniqueid)).mappings().first()
            if call is None:
                return None, []
            turns = conn.execute(sa.select(self.turns).where(self.turns.c.call_id == call["id"])
                                 .order_by(self.turns.c.turn_number)).mappings().all()
            return dict(call), [dict(t) for t in turns]

        return self._transaction("cannot read the call", work)

    def all_calls(self) -> Sequence[dict[str, Any]]:
        return self.recent_calls(limit=None)

    def recent_calls(self, limit: int | None = 20, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Calls, newest first, each with ``turns`` (count), ``answered`` (ok turns), ``status``
        (the last turn's) and ``avg_first_audio_ms``."""
        turns = self.turns
        summary = (sa.select(
            turns.c.call_id,
            sa.func.count().label("turns"),
            sa.func.sum(sa.case((turns.c.status == "ok", 1), else_=0)).label("answered"),
            sa.func.max(turns.c.turn_number).label("last_turn"),
            sa.func.avg(turns.c.first_audio_ms).label("avg_first_audio_ms"),
        ).group_by(turns.c.call_id).subquery())
        last = turns.alias("last_turn")
        query = (sa.select(self.calls, summary.c.turns, summary.c.answered, summary.c.avg_first_audio_ms,
                           last.c.status.label("status"), last.c.transcript.label("last_transcript"))
                 .outerjoin(summary, summary.c.call_id == self.calls.c.id)
                 .outerjoin(last, sa.and_(last.c.call_id == self.calls.c.id, last.c.turn_number == summary.c.last_turn))
                 .order_by(self.calls.c.started_at.desc(), self.calls.c.id.desc()))
        if since is not None:
            query = query.where(self.calls.c.started_at >= since)
        if limit is not None:
            query = query.limit(limit)
        rows = self._transaction("cannot list calls", lambda conn: [dict(r) for r in conn.execute(query).mappings()])
        for row in rows:
            row["turns"] = int(row["turns"] or 0)
            row["answered"] = int(row["answered"] or 0)
            if row["avg_first_audio_ms"] is not None:
                row["avg_first_audio_ms"] = int(row["avg_first_audio_ms"])
        return rows

    def turn_rows(self, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Every turn joined with its call (for export and statistics), oldest first."""
        query = (sa.select(self.calls.c.uniqueid, self.calls.c.linkedid, self.calls.c.caller_number,
                           self.calls.c.caller_name, self.calls.c.extension, *[c for c in self.turns.c if c.name != "id"])
                 .join(self.calls, self.calls.c.id == self.turns.c.call_id)
                 .order_by(self.turns.c.started_at, self.turns.c.id))
        if since is not None:
            query = query.where(self.turns.c.started_at >= since)
        return self._transaction("cannot read turns", lambda conn: [dict(r) for r in conn.execute(query).mappings()])

    # -- the web console ------------------------------------------------------------------------
    def call_page(self, *, offset: int = 0, limit: int = 50, since: dt.datetime | None = None,
                  until: dt.datetime | None = None, caller: str = "", status: str = "", provider: str = "",
                  text: str = "") -> tuple[list[dict[str, Any]], bool]:
        """One page of calls, newest first, and whether there are more.

        The page is chosen from the calls table alone (its started_at index); the turns are
        summarised only for the calls on the page, so a large database costs one page's turns.
        ``caller`` matches the number or name (a substring), ``status`` and ``provider`` any turn
        of the call, ``text`` a substring of any transcript or reply.
        """
        calls, turns = self.calls, self.turns
        query = sa.select(calls).order_by(calls.c.started_at.desc(), calls.c.id.desc())
        if since is not None:
            query = query.where(calls.c.started_at >= since)
        if until is not None:
            query = query.where(calls.c.started_at < until)
        if caller:
            pattern = f"%{_like_escaped(caller)}%"
            query = query.where(sa.or_(calls.c.caller_number.like(pattern, escape="\\"),
                                       calls.c.caller_name.like(pattern, escape="\\")))
        conditions = []
        if status:
            conditions.append(turns.c.status == status)
        if provider:
            conditions.append(sa.or_(turns.c.stt_provider == provider, turns.c.llm_provider == provider,
                                     turns.c.tts_provider == provider))
        if text:
            pattern = f"%{_like_escaped(text)}%"
            conditions.append(sa.or_(turns.c.transcript.like(pattern, escape="\\"),
                                     turns.c.reply.like(pattern, escape="\\")))
        if conditions:
            query = query.where(sa.exists().where(turns.c.call_id == calls.c.id, *conditions))
        query = query.offset(max(0, offset)).limit(limit + 1)

        def work(conn: Any) -> list[dict[str, Any]]:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            ids = [row["id"] for row in rows]
            summary: dict[int, dict[str, Any]] = {i: {"turns": 0, "answered": 0, "status": None,
                                                      "first_transcript": None, "speech_to_audio_ms": []} for i in ids}
            if ids:
                for turn in conn.execute(sa.select(turns.c.call_id, turns.c.turn_number, turns.c.status,
                                                   turns.c.transcript, turns.c.speech_to_audio_ms)
                                         .where(turns.c.call_id.in_(ids)).order_by(turns.c.turn_number)).mappings():
                    entry = summary[turn["call_id"]]
                    entry["turns"] += 1
                    entry["answered"] += turn["status"] == "ok"
                    entry["status"] = turn["status"]
                    if entry["first_transcript"] is None and turn["transcript"]:
                        entry["first_transcript"] = turn["transcript"]
                    if turn["speech_to_audio_ms"] is not None:
                        entry["speech_to_audio_ms"].append(turn["speech_to_audio_ms"])
            for row in rows:
                row.update(summary[row["id"]])
            return rows

        rows = self._transaction("cannot list calls", work)
        return rows[:limit], len(rows) > limit

    def delete_call(self, uniqueid: str) -> list[str] | None:
        """Delete one call and its turns; returns their audio paths (None: no such call)."""
        def work(conn: Any) -> list[str] | None:
            call_id = conn.execute(sa.select(self.calls.c.id).where(self.calls.c.uniqueid == uniqueid)).scalar()
            if call_id is None:
                return None
            return self._remove_calls(conn, [call_id])[1]

        return self._transaction("cannot delete the call", work)

    def timing_columns(self, since: dt.datetime, stages: Sequence[str] = TIMED_STAGES) -> dict[str, list[Any]]:
        """What the statistics need of each turn since ``since``, column by column (a list per
        column: 100 000 turns are read in a fraction of the time rows as dicts take): start,
        status, call, providers and the ``stages``' milliseconds; started_at in naive UTC."""
        names = ["started_at", "status", "call_id", "stt_provider", "llm_provider", "tts_provider",
                 *[f"{stage}_ms" for stage in stages]]
        # started_at as the database's naive UTC time: no time zone attached to 100 000 values.
        selected = [sa.type_coerce(self.turns.c.started_at, sa.DateTime()).label("started_at"),
                    *[self.turns.c[name] for name in names[1:]]]
        query = (sa.select(*selected).where(self.turns.c.started_at >= since)
                 .where(self.turns.c.speaker.is_(None)))  # a transcribed call's lines are not turns

        def work(conn: Any) -> dict[str, list[Any]]:
            rows = conn.execute(query).all()
            return {name: list(values) for name, values in zip(names, zip(*rows))} if rows else {n: [] for n in names}

        return self._transaction("cannot read turns", work)

    # -- retention ----------------------------------------------------------------------------
    def prune(self, older_than: dt.datetime, dry_run: bool = False) -> tuple[int, int, list[str]]:
        """Delete calls that started before ``older_than`` with their turns.

        Returns (calls, turns, audio paths of those turns) so the caller can delete the files.
        """
        def work(conn: Any) -> tuple[int, int, list[str]]:
            old_ids = [r[0] for r in conn.execute(sa.select(self.calls.c.id).where(self.calls.c.started_at < older_than))]
            turn_count, paths = self._remove_calls(conn, old_ids, dry_run=dry_run)
            return len(old_ids), turn_count, paths

        return self._transaction("cannot prune old calls", work)

    def _remove_calls(self, conn: Any, call_ids: list[int], *, dry_run: bool = False) -> tuple[int, list[str]]:
        """Delete the calls ``call_ids`` with their turns (or only count them, ``dry_run``);
        returns (turns, the turns' audio paths)."""
        paths: list[str] = []
        turn_count = 0
        for chunk in _chunks(call_ids, 500):
            rows = conn.execute(sa.select(self.turns.c.recording_path, self.turns.c.answer_path)
                                .where(self.turns.c.call_id.in_(chunk))).all()
            turn_count += len(rows)
            paths += [p for row in rows for p in row if p]
            if not dry_run:
                # Turns first: not every MariaDB table engine enforces ON DELETE CASCADE.
                conn.execute(self.turns.delete().where(self.turns.c.call_id.in_(chunk)))
                conn.execute(self.calls.delete().where(self.calls.c.id.in_(chunk)))
        return turn_count, paths

    def forget_audio(self, older_than: dt.datetime) -> int:
        """Clear the audio paths of turns that started before ``older_than`` (their files were
        pruned); returns how many turns had one."""
        turns = self.turns
        has_audio = sa.or_(turns.c.recording_path.is_not(None), turns.c.answer_path.is_not(None))
        query = (turns.update().where(turns.c.started_at < older_than, has_audio)
                 .values(recording_path=None, answer_path=None))
        return int(self._transaction("cannot update pruned turns", lambda conn: conn.execute(query).rowcount))


# MySQL/MariaDB: deadlock, lock wait timeout, table definition changed by a concurrent CREATE,
# and "savepoint does not exist" (InnoDB rolled the whole transaction back for a deadlock inside a
# savepoint); PostgreSQL: serialization failure, deadlock; SQLite: database is locked.
_TRANSIENT_CODES = {1213, 1205, 1412, 1305}
_TRANSIENT_STATES = {"40001", "40P01"}
TRANSIENT_ATTEMPTS = 5


def _transient(exc: sa.exc.SQLAlchemyError) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_CODES:
        return True
    if getattr(orig, "sqlstate", None) in _TRANSIENT_STATES:
        return True
    return isinstance(exc, sa.exc.OperationalError) and "database is locked" in str(orig)


def _refused_record(exc: sa.exc.SQLAlchemyError) -> bool:
    """The database (or the driver, binding it) refused the record itself: a value of the wrong
    type or out of range (SQLSTATE class 22), a constraint (class 23). Not a missing column: that
    is a schema to upgrade, after which the same record goes in."""
    if isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError)):
        return True
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


def _schema_mismatch(exc: sa.exc.SQLAlchemyError) -> bool:
    """A missing table or column (PostgreSQL: ProgrammingError; MariaDB, SQLite: OperationalError)."""
    if isinstance(exc, sa.exc.ProgrammingError):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, sa.exc.OperationalError) and ("column" in text or "no such table" in text)


def _like_escaped(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (its % and _ are not wildcards)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def make_engine(url: str, timeout: float = 5.0) -> Any:
    """An engine whose connects, lock waits and statements give up after about ``timeout`` seconds."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Many AGI processes write at once: WAL lets readers and one writer work together, and the
        # busy timeout makes a writer wait for the lock instead of failing at once.
        engine = sa.create_engine(url, connect_args={"timeout": timeout})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            if database and database != ":memory:":
                give_to_directory_owner(*(Path(database + suffix) for suffix in ("", "-wal", "-shm")))

        return engine
    seconds = max(1, int(round(timeout)))
    connect_args: dict[str, Any] = {}
    if backend in ("mysql", "mariadb"):
        connect_args = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    elif backend == "postgresql":
        connect_args = {"connect_timeout": seconds, "options": f"-c statement_timeout={seconds * 1000} "
                                                                f"-c lock_timeout={seconds * 1000}"}
    # Process AGI makes a handful of queries and exits: no pool worth keeping; FastAGI reuses it.
    return sa.create_engine(url, pool_pre_ping=True, pool_recycle=3600, connect_args=connect_args)


def redact_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"
