"""How long calls and their audio are kept, and the prune that enforces it.

Two limits (``[privacy]``): ``audio_retention_days`` for the recordings and answer files in
``[general] answer_dir`` (the bulk of the disk), ``retention_days`` for the stored calls and turns
(their audio goes with them). 0 keeps forever. ``voiceassist db prune`` applies both; the FastAGI
server runs it once a day, and `voiceassist install` adds a daily timer for process-AGI-only systems.

Audio is found by age on disk, not only through the database, so files no turn points to (a
crashed process's part files, calls whose turns were lost) are pruned too. Only regular files
inside ``answer_dir/<call>/`` are touched: never a symbolic link, never anything outside, whatever
path a stored turn names.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StorageError
from ..logs import logger

# What voiceassist and the dialplan write in a call's directory (recordings, answers, their parts
# and temporary files); nothing else there is ours to delete.
OUR_AUDIO = re.compile(r"(question-\d+\.wav|answer-\d+(-part\d+)?\.(ulaw|wav)|\.tmp-.*\.ulaw|\.answer-\d+\.ulaw\..*\.tmp)")
DAY = 86400.0
# The server's first prune waits this long after start-up (not during the burst of first calls).
FIRST_PRUNE_AFTER = 60.0


@dataclass
class PruneReport:
    calls: int = 0
    turns: int = 0
    audio_files: int = 0
    audio_bytes: int = 0
    storage_error: str | None = None


def inside(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is, after resolving every link, strictly inside ``directory``."""
    real, root = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([real, root]) == root and real != root


def remove_files(paths: list[str], directory: str | os.PathLike[str]) -> int:
    """Delete the regular files among ``paths`` that are inside ``directory`` (links and anything
    outside are left alone), then their directories when empty. Returns how many were deleted."""
    removed = 0
    parents = set()
    for path in paths:
        if not inside(path, directory):
            logger.warning("[DB] not deleting %r: outside %s", path, directory)
            continue
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            os.unlink(path)
            removed += 1
        except OSError:
            continue
        parents.add(os.path.dirname(path))
    for parent in sorted(parents, reverse=True):
        if inside(parent, directory):
            try:
                os.rmdir(parent)  # only when empty: other files there are not ours to delete
            except OSError:
                pass
    return removed


def old_audio(directory: str | os.PathLike[str], older_than: float) -> list[tuple[str, int]]:
    """Our audio files in ``directory/<call>/`` last written before ``older_than`` (epoch
    seconds), with their sizes. Links are never followed."""
    found: list[tuple[str, int]] = []
    try:
        calls = list(os.scandir(directory))
    except OSError:
        return found
    for call in calls:
        if not call.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(call.path))
        except OSError:
            continue
        for entry in entries:
            if not OUR_AUDIO.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if info.st_mtime < older_than:
                found.append((entry.path, info.st_size))
    return found


def prune(journal: Any, answer_dir: str, *, days: int, audio_days: int, dry_run: bool = False,
          now: dt.datetime | None = None) -> PruneReport:
    """Delete calls older than ``days`` (with their audio) and audio older than ``audio_days``.

    A database that cannot be reached stops only the first part (``storage_error`` says why):
    the audio, which is what fills a disk, is pruned anyway.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    report = PruneReport()
    if days > 0:
        try:
            report.calls, report.turns, paths = journal.store().prune(now - dt.timedelta(days=days), dry_run=dry_run)
            if not dry_run:
                report.audio_files += remove_files(paths, answer_dir)
        except StorageError as exc:
            report.storage_error = str(exc)
    if audio_days > 0:
        cutoff = now - dt.timedelta(days=audio_days)
        files = old_audio(answer_dir, cutoff.timestamp())
        report.audio_bytes = sum(size for _, size in files)
        if dry_run:
            report.audio_files += len(files)
        else:
            report.audio_files += remove_files([path for path, _ in files], answer_dir)
            try:
                journal.store().forget_audio(cutoff)
            except StorageError as exc:
                report.storage_error = report.storage_error or str(exc)
    return report


class DailyPrune(threading.Thread):
    """Runs :func:`prune` once a day while the FastAGI server runs (the first time a minute after
    start-up, not during it). Several worker processes take turns through a lock file."""

    def __init__(self, journal: Any, answer_dir: str, days: int, audio_days: int, *,
                 first_after: float | None = None, interval: float = DAY) -> None:
        super().__init__(name="voiceassist-daily-prune", daemon=True)
        self.journal, self.answer_dir = journal, answer_dir
        self.days, self.audio_days = days, audio_days
        self.first_after = FIRST_PRUNE_AFTER if first_after is None else first_after
        self.interval = interval
        self.stopped = threading.Event()
        self.runs = 0

    def run(self) -> None:
        wait = self.first_after
        while not self.stopped.wait(wait):
            wait = self.interval
            try:
                self.prune_once()
            except Exception:  # never let the pruner die: tomorrow's run may succeed
                logger.exception("[DB] daily prune failed")

    def prune_once(self) -> PruneReport | None:
        spool = Path(self.journal.spool.directory)
        spool.mkdir(parents=True, exist_ok=True)
        fd = os.open(spool / ".prune.lock", os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another worker is pruning
            report = prune(self.journal, self.answer_dir, days=self.days, audio_days=self.audio_days)
        finally:
            os.close(fd)
        self.runs += 1
        logger.info("[DB] daily prune: %d calls, %d turns, %d audio files (%d bytes)%s", report.calls,
                    report.turns, report.audio_files, report.audio_bytes,
                    f"; database: {report.storage_error}" if report.storage_error else "")
        return report

    def stop(self) -> None:
        self.stopped.set()
