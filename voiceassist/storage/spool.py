"""The local spool: turns and call ends that could not reach the database, one file each.

Each entry is a small JSON file written to a temporary name, fsync'd, renamed into place and the
directory fsync'd, so a crash or power cut leaves either the whole entry or none of it. Entries
are only ever added and deleted (never rewritten). :meth:`Spool.replay` stores them in the order
they were written and deletes each one after its database transaction commits; the database's
unique (call, turn number) key makes a replay after a lost acknowledgement harmless, so every
turn arrives exactly once. An entry that cannot be read, or that the database refuses for good (a
value it will not take, a constraint), is moved to ``rejected/`` with a ``.why`` file and reported;
only a real database failure stops the replay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import StorageError, StorageRejected
from ..system.ownership import give_to_directory_owner
from ..types import CallInfo, TurnRecord

FORMAT_VERSION = 1
_sequence = itertools.count()
_sequence_lock = threading.Lock()


class TurnStore(Protocol):
    def add_turn(self, call: CallInfo, turn: TurnRecord) -> bool: ...
    def end_call(self, call: CallInfo, end_state: str | None = None, ended_at: dt.datetime | None = None) -> None: ...


@dataclass
class SpoolEntry:
    """One spooled write: a turn, or the end of a call."""

    path: Path
    kind: str                    # "turn" | "end"
    call: CallInfo
    turn: TurnRecord | None = None
    end_state: str | None = None
    ended_at: dt.datetime | None = None


@dataclass
class ReplayResult:
    stored: int = 0          # entries written to the database
    duplicates: int = 0      # turns the database already had (written before, acknowledgement lost)
    pending: int = 0         # entries left for later (the database failed again)
    rejected: int = 0        # unreadable entries moved aside
    busy: bool = False       # another process was replaying
    error: str | None = None


def _safe(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", text)[:80] or "call"


def _encode_turn(turn: TurnRecord) -> dict[str, Any]:
    data = dataclasses.asdict(turn)
    for key in ("started_at", "finished_at"):
        data[key] = data[key].isoformat() if data[key] else None
    return data


def _decode_turn(data: dict[str, Any]) -> TurnRecord:
    known = {f.name for f in dataclasses.fields(TurnRecord)}
    values = {k: v for k, v in data.items() if k in known}
    for key in ("started_at", "finished_at"):
        if values.get(key):
            values[key] = dt.datetime.fromisoformat(values[key])
        else:
            values.pop(key, None)
    values["timings"] = {str(k): int(v) for k, v in (values.get("timings") or {}).items()}
    return TurnRecord(**values)


class Spool:
    """A directory of pending database writes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    # -- writing ------------------------------------------------------------------------------
    def add_turn(self, call: CallInfo, turn: TurnRecord) -> Path:
        return self._write("turn", call, {"turn": _encode_turn(turn)}, f"turn{turn.turn_number}")

    def end_call(self, call: CallInfo, end_state: str | None, ended_at: dt.datetime) -> Path:
        return self._write("end", call, {"end_state": end_state, "ended_at": ended_at.isoformat()}, "end")

    def _write(self, kind: str, call: CallInfo, body: dict[str, Any], label: str) -> Path:
        entry = {"format": FORMAT_VERSION, "kind": kind, "call": dataclasses.asdict(call), **body}
        data = json.dumps(entry, ensure_ascii=False).encode("utf-8", "replace")
        with _sequence_lock:
            sequence = next(_sequence)
        # Names sort in write order: nanosecond clock, then pid and a per-process sequence.
        name = f"{time.time_ns():020d}-{os.getpid()}-{sequence:06d}-{_safe(call.uniqueid)}-{label}.json"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.directory / f".{name}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            final = self.directory / name
            os.rename(temporary, final)
            self._sync_directory()
            return final
        except OSError as exc:
            raise StorageError(f"cannot write to the spool {self.directory}: {exc}") from None

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------------------
    def pending_paths(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def __len__(self) -> int:
        return len(self.pending_paths())

    def entries(self, uniqueid: str | None = None) -> Iterator[SpoolEntry]:
        """Readable entries in write order (optionally of one call); unreadable ones are skipped."""
        for path in self.pending_paths():
            if uniqueid is not None and f"-{_safe(uniqueid)}-" not in path.name:
                continue
            try:
                entry = self._read(path)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if uniqueid is None or entry.call.uniqueid == uniqueid:
                yield entry

    @staticmethod
    def _read(path: Path) -> SpoolEntry:
        data = json.loads(path.read_text(encoding="utf-8"))
        call = CallInfo(**data["call"])
        if data["kind"] == "turn":
            return SpoolEntry(path, "turn", call, turn=_decode_turn(data["turn"]))
        if data["kind"] == "end":
            ended_at = dt.datetime.fromisoformat(data["ended_at"]) if data.get("ended_at") else None
            return SpoolEntry(path, "end", call, end_state=data.get("end_state"), ended_at=ended_at)
        raise ValueError(f"unknown spool entry kind {data['kind']!r}")

    # -- replay -------------------------------------------------------------------------------
    def replay(self, store: TurnStore, wait: bool = True) -> ReplayResult:
        """Write pending entries into ``store`` in order, deleting each once it is stored.

        One replay at a time (a lock file): with ``wait=False`` return at once, ``busy``, if
        another process holds it. Stops at the first database failure (the rest waits for the
        next replay, so entries of one call stay in order).
        """
        result = ReplayResult()
        if not self.pending_paths():
            return result
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.directory / ".replay.lock"
        # Read-only: flock needs no write access, so a lock file root created stays usable by asterisk.
        # O_NOFOLLOW and dir_fd: a lock "file" the asterisk user replaced by a link is refused,
        # never created or opened through it (defence in depth: root works here as asterisk).
        directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            lock_fd = os.open(lock_path.name, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640,
                              dir_fd=directory_fd)
        except OSError as exc:
            raise StorageError(f"cannot open the spool's lock file {lock_path}: {exc.strerror}") from None
        finally:
            os.close(directory_fd)
        with open(lock_fd, "rb") as lock:
            give_to_directory_owner(lock_path)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                result.busy = True
                return result
            paths = self.pending_paths()  # again: the previous holder may have replayed them
            for index, path in enumerate(paths):
                try:
                    entry = self._read(path)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError, TypeError, KeyError) as exc:
                    self._reject(path, exc)
                    result.rejected += 1
                    continue
                try:
                    if entry.kind == "turn":
                        assert entry.turn is not None
                        if store.add_turn(entry.call, entry.turn):
                            result.stored += 1
                        else:
                            result.duplicates += 1
                    else:
                        store.end_call(entry.call, entry.end_state, entry.ended_at)
                        result.stored += 1
                except StorageRejected as exc:
                    # This entry will never go in; the ones after it must not wait behind it.
                    self._reject(path, exc)
                    result.rejected += 1
                    continue
                except StorageError as exc:
                    result.pending = len(paths) - index
                    result.error = str(exc)
                    return result
                path.unlink(missing_ok=True)
                self._sync_directory()
        return result

    def _reject(self, path: Path, exc: Exception) -> None:
        # Through descriptors, never following a link: the asterisk user may have made
        # rejected/ (or the note's name) a link to elsewhere.
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        spool_fd = os.open(self.directory, flags)
        try:
            try:
                os.mkdir("rejected", 0o750, dir_fd=spool_fd)
            except FileExistsError:
                pass
            try:
                rejected_fd = os.open("rejected", flags, dir_fd=spool_fd)
            except OSError as error:
                raise StorageError(f"cannot set aside the damaged spool entry {path.name}: "
                                   f"{self.directory / 'rejected'} is not a plain directory ({error.strerror})") from None
            try:
                give_to_directory_owner(self.directory / "rejected")
                os.rename(path.name, path.name, src_dir_fd=spool_fd, dst_dir_fd=rejected_fd)
                why = path.name + ".why"
                try:
                    fd = os.open(why, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640,
                                 dir_fd=rejected_fd)
                except FileExistsError:
                    return
                with open(fd, "w", encoding="utf-8") as note:
                    note.write(f"{type(exc).__name__}: {exc}\n")
                give_to_directory_owner(self.directory / "rejected" / why)
            finally:
                os.close(rejected_fd)
        finally:
            os.close(spool_fd)
