"""The outbox: events waiting to be sent, one JSON file per (event, receiver), shared by processes.

The FastAGI server, its worker processes and short-lived process-AGI calls all add events here,
and any of them may send. Three folders (made 0750):

* ``pending/``: entries waiting for their (next) attempt. Each is written to a temporary name,
  fsync'd, renamed into place and the folder fsync'd (:meth:`Directory.write`), so a crash or a
  power cut leaves the whole entry or none of it. Names sort by the event's creation time in
  microseconds, then its id, then the receiver: ``<created µs>-<event id>-<receiver key>.json``.
  A retry rewrites the entry under the same name, so it keeps its place.
* ``sending/``: entries claimed for delivery, renamed here under a name of the claiming process
  (``<...>.<pid>-<random>.json``). Only one rename of a file succeeds, so no entry is sent by two
  processes at once. A claim left by a process that died mid-delivery goes back to ``pending/``
  after :data:`STALE_CLAIM_SECONDS` (:meth:`Outbox.recover_stale`).
* ``rejected/``: entries given up on (refused by the receiver, too old, unreadable), each with a
  ``<name>.why`` note, as the database spool keeps them.

Order per receiver: :meth:`Outbox.due` offers an entry only if every earlier entry for the same
receiver is due as well and none is being sent, so each receiver gets its events in the order they
were made, and a dead receiver holds back only its own.

Delivery is at least once: a process that dies after the receiver accepted an entry but before it
removed the entry sends it again after recovery; receivers recognise a repeat by the event id.

The asterisk user (and whoever breaks into Asterisk) can write here, so every file is reached
through descriptors of folders opened without following links (:mod:`voiceassist.system.safe_files`):
a link, FIFO or folder planted among the entries is moved to ``rejected/``, never read or written
through.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import UnsafePath
from ..logs import logger
from ..system.safe_files import Directory, Owner, lstat, open_directory, sha256

FORMAT_VERSION = 1
PENDING, SENDING, REJECTED = "pending", "sending", "rejected"
FOLDER_MODE = 0o750
FILE_MODE = 0o640
# An entry holds a transcript or a reply: kilobytes. A file far larger was not written by us.
MAX_ENTRY_BYTES = 1024 * 1024
MAX_REASON_CHARS = 2000
# An attempt takes at most [webhooks] timeout (600 s at most): a claim older than this belongs to
# a process that died (or was stopped) mid-delivery.
STALE_CLAIM_SECONDS = 15 * 60.0

_EVENT_ID = re.compile(r"[0-9A-Za-z]{1,64}")
_ENTRY_NAME = re.compile(r"(?P<stem>(?P<created>\d{16})-(?P<event_id>[0-9A-Za-z]{1,64})-(?P<key>[0-9a-f]{16}))"
                         r"(?:\.(?P<claim>\d{1,10}-[0-9a-f]{8}))?\.json")


class OutgoingEvent(Protocol):
    """What the outbox keeps of an event (:class:`voiceassist.events.webhooks.Event` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def created(self) -> float: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class OutboxEntry:
    """One event for one receiver, as read from ``pending/``."""

    name: str                  # its file name in pending/
    destination: str           # the receiver's URL
    event: dict[str, Any]      # id, type, created, data: what the receiver gets
    attempts: int              # failed attempts so far
    next_at: float             # epoch seconds from which it may be tried (again)
    last_error: str            # why the last attempt failed ("" before any)

    @property
    def destination_key(self) -> str:
        """The receiver's part of the file name: entries with the same key are sent in order."""
        return destination_key(self.destination)


@dataclass(frozen=True)
class ClaimedEntry(OutboxEntry):
    """An entry this process took for delivery; it is in ``sending/`` until it is settled with
    :meth:`Outbox.delivered`, :meth:`Outbox.retry_later`, :meth:`Outbox.reject` or :meth:`Outbox.release`."""

    claimed_name: str          # its file name in sending/


class _Unreadable(Exception):
    """An entry that cannot be used (the reason is the message); it is set aside, never raised to callers."""


def destination_key(destination: str) -> str:
    """A short fixed-length stand-in for a receiver's URL in file names."""
    return sha256(destination.encode("utf-8", "surrogatepass"))[:16]


def entry_name(created: float, event_id: str, destination: str) -> str:
    """``<created µs>-<event id>-<receiver key>.json``: sorting the names sorts by creation time."""
    return f"{round(created * 1_000_000):016d}-{event_id}-{destination_key(destination)}.json"


class Outbox:
    """A directory of events waiting to be sent.

    Methods raise ``OSError`` or :class:`UnsafePath` only when the outbox itself cannot be used
    (cannot be created or written, or one of its folders is a link); a bad entry is moved to
    ``rejected/`` and never raised.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(os.path.abspath(directory))
        self._owner_known = False
        self._owner: Owner | None = None

    # -- adding -------------------------------------------------------------------------------
    def add(self, event: OutgoingEvent, destination: str) -> OutboxEntry:
        """Queue ``event`` for ``destination``; it is on disk (fsync'd) when this returns.

        Raises:
            ValueError: the event id is not plain letters and digits, its time is not a plain
                epoch time, or the entry would be larger than :data:`MAX_ENTRY_BYTES`.
        """
        if not _EVENT_ID.fullmatch(event.id):
            raise ValueError(f"event id {event.id!r} is not 1 to 64 letters and digits")
        if not 0 <= event.created < 10**10:
            raise ValueError(f"event time {event.created!r} is not an epoch time")
        entry = OutboxEntry(
            name=entry_name(event.created, event.id, destination), destination=destination,
            event={"id": event.id, "type": event.type, "created": event.created, "data": dict(event.data)},
            attempts=0, next_at=event.created, last_error="")
        data = _encode(entry)
        if len(data) > MAX_ENTRY_BYTES:
            raise ValueError(f"the {event.type} event is {len(data)} bytes, "
                             f"more than the outbox takes ({MAX_ENTRY_BYTES})")
        with self._folders(PENDING) as (pending,):
            pending.write(entry.name, data, mode=FILE_MODE, owner=self._owner_of_files())
        return entry

    # -- sending ------------------------------------------------------------------------------
    def due(self, now: float) -> list[OutboxEntry]:
        """Pending entries that may be sent at ``now``, oldest first: each one's next attempt time
        has come, and so has that of every earlier entry for its receiver, none of which is being
        sent. Unreadable entries found on the way are moved to ``rejected/``."""
        entries: list[OutboxEntry] = []
        with self._folders(PENDING, SENDING) as (pending, sending):
            # pending/ is listed before sending/: an entry claimed in between is found in sending/
            # (and holds its receiver back). The other way round it could be in neither listing,
            # and the next entry for its receiver would be offered while it is still in flight.
            names = _entry_names(pending)
            held_back = {match["key"] for match in map(_ENTRY_NAME.fullmatch, _entry_names(sending)) if match}
            for name in names:
                match = _ENTRY_NAME.fullmatch(name)
                if match is None or match["claim"]:
                    self._set_aside(pending, name, "not the name of an outbox entry")
                    continue
                if match["key"] in held_back:
                    continue
                try:
                    entry = _read(pending, name)
                except _Unreadable as exc:
                    self._set_aside(pending, name, str(exc))
                    continue
                if entry is None or entry.next_at > now:
                    # Claimed by another process since the listing, or waiting for its retry:
                    # the later entries for its receiver wait behind it.
                    held_back.add(match["key"])
                    continue
                entries.append(entry)
        return entries

    def claim(self, entry: OutboxEntry) -> ClaimedEntry | None:
        """Take ``entry`` for delivery by this process: ``None`` if another process took it first
        (or it is gone, or unreadable). The claimed entry is read again: it may have been retried
        (and so changed) since ``entry`` was read."""
        stem = entry.name.removesuffix(".json")
        claimed_name = f"{stem}.{os.getpid()}-{secrets.token_hex(4)}.json"
        with self._folders(PENDING, SENDING) as (pending, sending):
            # Not fsync'd: after a power cut the entry is in pending/ or in sending/, and is sent
            # (again) either way.
            try:
                os.rename(entry.name, claimed_name, src_dir_fd=pending.fd, dst_dir_fd=sending.fd)
            except FileNotFoundError:
                return None
            try:
                # A rename keeps the file's times; recover_stale measures the claim's age by them.
                os.utime(claimed_name, dir_fd=sending.fd, follow_symlinks=False)
            except OSError:
                pass  # not our file to touch: it is unreadable too, and set aside just below
            try:
                current = _read(sending, claimed_name)
            except _Unreadable as exc:
                self._set_aside(sending, claimed_name, str(exc), rejected_name=entry.name)
                return None
        if current is None:
            return None
        return ClaimedEntry(**_fields(current), claimed_name=claimed_name)

    def delivered(self, claimed: ClaimedEntry) -> None:
        """The receiver has it: remove the entry."""
        with self._folders(SENDING) as (sending,):
            try:
                sending.unlink(claimed.claimed_name)
            except FileNotFoundError:
                pass  # taken back by recover_stale: it will be sent again (at least once)

    def retry_later(self, claimed: ClaimedEntry, error: str, next_at: float) -> None:
        """The attempt failed: back to ``pending/`` (same name, same place in the order) with one
        more attempt counted, ``error`` and the time of the next attempt, rewritten atomically."""
        updated = dataclasses.replace(claimed, attempts=claimed.attempts + 1, next_at=next_at,
                                      last_error=error[:MAX_REASON_CHARS])
        with self._folders(PENDING, SENDING) as (pending, sending):
            if sending.entry(claimed.claimed_name) is None:
                return  # taken back by recover_stale meanwhile: that copy carries on
            # Rewritten in sending/, then moved: a crash in between leaves one copy, in sending/.
            sending.write(claimed.claimed_name, _encode(updated), mode=FILE_MODE, owner=self._owner_of_files())
            os.rename(claimed.claimed_name, claimed.name, src_dir_fd=sending.fd, dst_dir_fd=pending.fd)
            _sync(pending)
            _sync(sending)

    def release(self, claimed: ClaimedEntry) -> None:
        """Put a claimed entry back unchanged (it was not to be sent yet after all)."""
        with self._folders(PENDING, SENDING) as (pending, sending):
            try:
                os.rename(claimed.claimed_name, claimed.name, src_dir_fd=sending.fd, dst_dir_fd=pending.fd)
            except FileNotFoundError:
                pass

    def reject(self, claimed: ClaimedEntry, reason: str) -> None:
        """Give up on a claimed entry: it goes to ``rejected/`` with ``reason`` in ``<name>.why``."""
        with self._folders(SENDING, REJECTED) as (sending, rejected):
            try:
                self._move_to_rejected(sending, claimed.claimed_name, rejected, claimed.name, reason)
            except FileNotFoundError:
                pass  # taken back by recover_stale: the other copy is judged on its own

    def recover_stale(self, now: float, older_than: float = STALE_CLAIM_SECONDS) -> int:
        """Claims older than ``older_than`` seconds go back to ``pending/`` (their process died
        mid-delivery), and temporary files left by a crash are removed. Returns the claims
        taken back. ``now`` is compared with file times: pass the wall clock."""
        recovered = 0
        with self._folders(PENDING, SENDING) as (pending, sending):
            for name in sending.names():
                found = sending.entry(name)
                if found is None:
                    continue
                if name.startswith("."):
                    _remove_if_old_temporary(sending, found.name, found.info.st_mtime, now, older_than)
                    continue
                match = _ENTRY_NAME.fullmatch(name)
                if match is None or not match["claim"] or not found.is_file:
                    self._set_aside(sending, name, "not an outbox entry: "
                                    + (found.kind() if not found.is_file else "not the name of a claimed entry"))
                    continue
                if now - found.info.st_mtime < older_than:
                    continue
                try:
                    os.rename(name, match["stem"] + ".json", src_dir_fd=sending.fd, dst_dir_fd=pending.fd)
                except FileNotFoundError:
                    continue
                recovered += 1
                logger.warning("[webhooks] %s was claimed by process %s %.0f s ago and never settled: back to pending",
                               match["stem"], match["claim"].split("-")[0], now - found.info.st_mtime)
            for name in pending.names():
                if name.startswith(".") and (found := pending.entry(name)) is not None:
                    _remove_if_old_temporary(pending, name, found.info.st_mtime, now, older_than)
            if recovered:
                _sync(pending)
                _sync(sending)
        return recovered

    # -- looking ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """How many entries each folder holds: ``{"pending": .., "sending": .., "rejected": ..}``."""
        counts = {}
        for folder_name in (PENDING, SENDING, REJECTED):
            try:
                with self._folders(folder_name, create=False) as (folder,):
                    counts[folder_name] = sum(1 for name in _entry_names(folder) if not name.endswith(".why"))
            except FileNotFoundError:
                counts[folder_name] = 0
        return counts

    def rejected(self) -> list[tuple[str, str]]:
        """The entries in ``rejected/``, oldest first, each with the reason it was given up."""
        found = []
        try:
            with self._folders(REJECTED, create=False) as (rejected,):
                for name in _entry_names(rejected):
                    if name.endswith(".why"):
                        continue
                    try:
                        note = rejected.read(name + ".why", limit=MAX_REASON_CHARS * 4)
                    except (OSError, UnsafePath):
                        note = None
                    found.append((name, note.decode("utf-8", "replace").strip() if note else ""))
        except FileNotFoundError:
            pass
        return found

    # -- the folders --------------------------------------------------------------------------
    @contextmanager
    def _folders(self, *names: str, create: bool = True) -> Iterator[list[Directory]]:
        """The outbox's folders ``names``, opened (made 0750 if missing) without following links.
        Opened afresh for each operation: an outbox an admin removed is made again, not written
        into through a stale descriptor."""
        owner = self._owner_of_files() if create else None
        with ExitStack() as stack:
            outbox = open_directory(self.directory, create=create, mode=FOLDER_MODE, owner=owner)
            stack.callback(outbox.close)
            folders = []
            for name in names:
                if not create and outbox.entry(name) is None:
                    raise FileNotFoundError(name)
                folder, _ = outbox.subdirectory(name, create=create, mode=FOLDER_MODE, owner=owner)
                stack.callback(folder.close)
                folders.append(folder)
            yield folders

    def _owner_of_files(self) -> Owner | None:
        """Run as root (an admin's command), what the outbox makes goes to the owner of the folder
        it is in (the asterisk user's spool), or the calls could not use it afterwards."""
        if not self._owner_known:
            self._owner_known = True
            if os.geteuid() == 0:
                parent = lstat(self.directory.parent)
                if parent is not None and parent.is_directory and parent.info.st_uid != 0:
                    self._owner = (parent.info.st_uid, parent.info.st_gid)
        return self._owner

    def _set_aside(self, folder: Directory, name: str, reason: str, rejected_name: str | None = None) -> None:
        """Move an unusable file to ``rejected/``; a failure to do so is logged, never raised."""
        try:
            with self._folders(REJECTED) as (rejected,):
                self._move_to_rejected(folder, name, rejected, rejected_name or name, reason)
        except FileNotFoundError:
            return
        except (OSError, UnsafePath) as exc:
            logger.error("[webhooks] cannot move %s to rejected/ (%s): %s", folder.path / name, reason, exc)
            return
        logger.error("[webhooks] %s moved to %s: %s", folder.path / name, self.directory / REJECTED, reason)

    def _move_to_rejected(self, folder: Directory, name: str, rejected: Directory, rejected_name: str,
                          reason: str) -> None:
        os.rename(name, rejected_name, src_dir_fd=folder.fd, dst_dir_fd=rejected.fd)
        _sync(folder)
        note = (reason[:MAX_REASON_CHARS] + "\n").encode("utf-8", "replace")
        rejected.write(rejected_name + ".why", note, mode=FILE_MODE, owner=self._owner_of_files())


def _entry_names(folder: Directory) -> list[str]:
    """The names in ``folder`` in order, without temporary files (``.*``)."""
    return [name for name in folder.names() if not name.startswith(".")]


def _fields(entry: OutboxEntry) -> dict[str, Any]:
    return {field.name: getattr(entry, field.name) for field in dataclasses.fields(OutboxEntry)}


def _encode(entry: OutboxEntry) -> bytes:
    # ASCII: any text (a lone surrogate included) is stored and read back as it was.
    record = {"format": FORMAT_VERSION, "destination": entry.destination, "event": entry.event,
              "attempts": entry.attempts, "next_at": entry.next_at, "last_error": entry.last_error}
    return json.dumps(record, ensure_ascii=True, sort_keys=True, allow_nan=False).encode("ascii")


def _read(folder: Directory, name: str) -> OutboxEntry | None:
    """The entry in ``folder/name`` (``None`` if it is gone).

    Raises:
        _Unreadable: not a plain file, unreadable, or not a complete entry of ours.
    """
    try:
        data = folder.read(name, limit=MAX_ENTRY_BYTES + 1)
    except UnsafePath:
        found = folder.entry(name)
        raise _Unreadable(f"{found.kind() if found else 'gone'}, not a plain file: not read") from None
    except OSError as exc:
        raise _Unreadable(f"unreadable: {exc.strerror or exc}") from None
    if data is None:
        return None
    try:
        return _decode(name, data)
    except (ValueError, RecursionError) as exc:
        raise _Unreadable(f"not a valid outbox entry: {exc}") from None


def _decode(name: str, data: bytes) -> OutboxEntry:
    match = _ENTRY_NAME.fullmatch(name)
    if match is None:
        raise ValueError("not the name of an outbox entry")
    if len(data) > MAX_ENTRY_BYTES:
        raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
    record = json.loads(data.decode("utf-8"))
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
        raise ValueError(f"not an entry of format {FORMAT_VERSION}")
    destination, event = record.get("destination"), record.get("event")
    attempts, next_at, last_error = record.get("attempts"), record.get("next_at"), record.get("last_error")
    if not isinstance(destination, str) or destination_key(destination) != match["key"]:
        raise ValueError("its receiver is not the one its name is for")
    if (not isinstance(event, dict) or event.get("id") != match["event_id"] or not isinstance(event.get("type"), str)
            or not _is_number(event.get("created")) or not isinstance(event.get("data"), dict)):
        raise ValueError("its event is incomplete or not the one its name is for")
    if (not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0
            or not isinstance(next_at, (int, float)) or isinstance(next_at, bool) or not isinstance(last_error, str)):
        raise ValueError("its delivery state is invalid")
    return OutboxEntry(match["stem"] + ".json", destination, event, attempts, float(next_at), last_error)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _remove_if_old_temporary(folder: Directory, name: str, modified: float, now: float, older_than: float) -> None:
    """A ``.<name>.<random>.tmp`` file a process left when it died mid-write goes, once it is old."""
    if name.endswith(".tmp") and now - modified >= older_than:
        try:
            folder.unlink(name)
        except OSError:
            pass  # a folder planted under that name: it only takes up space


def _sync(folder: Directory) -> None:
    try:
        os.fsync(folder.fd)
    except OSError:
        pass
