"""The admin commands behind ``voiceassist db ...`` and ``voiceassist calls ...``: one function
each, returning the exit status."""

from __future__ import annotations

import datetime as dt
import json
import sys

from ..call.assistant import Assistant
from ..errors import StorageError
from .reports import export_turns, print_call, print_calls, print_statistics, stage_statistics


def _since(days: float | None) -> dt.datetime | None:
    if days is None:
        return None
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)


def db_upgrade(assistant: Assistant) -> int:
    from ..storage.migrate import upgrade

    journal = assistant.journal()
    before, after = upgrade(journal.store())
    if before == after:
        print(f"{journal.store().where}: schema already at revision {after}")
    else:
        print(f"{journal.store().where}: schema upgraded from {before or 'empty'} to revision {after}")
    return 0


def db_status(assistant: Assistant) -> int:
    from ..storage.migrate import head_revision

    journal = assistant.journal()
    pending = len(journal.spool)
    print(f"database  {journal.store().where}")
    try:
        revision = journal.store().schema_revision()
        head = head_revision()
        state = "current" if revision == head else f"needs `voiceassist db upgrade` to {head}"
        print(f"schema    {revision or 'no tables yet'} ({state if revision else 'created on first call'})")
    except StorageError as exc:
        print(f"schema    unknown: {exc}")
        revision, head = None, ""
    print(f"spool     {journal.spool.directory}: {pending} turn(s) or call end(s) waiting")
    return 0 if (revision in (None, head)) else 1


def db_flush(assistant: Assistant) -> int:
    journal = assistant.journal()
    result = journal.flush()
    if result.error:
        print(f"voiceassist: database still unavailable, {result.pending} entries stay in the spool: {result.error}",
              file=sys.stderr)
    print(f"stored {result.stored}, already there {result.duplicates}, rejected {result.rejected}, "
          f"waiting {result.pending}")
    if result.rejected:
        print(f"rejected entries were moved to {journal.spool.directory / 'rejected'}", file=sys.stderr)
    return 1 if (result.error or result.rejected) else 0


def db_prune(assistant: Assistant, days: int | None, audio_days: int | None, dry_run: bool) -> int:
    """Apply the retention ([privacy]; ``days``/``audio_days`` override it)."""
    from ..storage.retention import prune

    privacy = assistant.config.settings("privacy")
    days = days if days is not None else privacy.retention_days
    audio_days = audio_days if audio_days is not None else privacy.audio_retention_days
    if days <= 0 and audio_days <= 0:
        print("nothing to prune: [privacy] retention_days is 0 and audio_retention_days is 0 (keep forever); "
              "use --days N")
        return 0
    report = prune(assistant.journal(), assistant.config.settings("general").answer_dir, days=days,
                   audio_days=audio_days, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    if days > 0 and report.storage_error is None:
        print(f"{verb} {report.calls} calls, {report.turns} turns and their audio older than {days} days")
    if audio_days > 0:
        print(f"{verb} {report.audio_files} recordings and answers older than {audio_days} days "
              f"({report.audio_bytes / 1e6:.1f} MB)")
    if report.storage_error:
        print(f"voiceassist: database: {report.storage_error}", file=sys.stderr)
        return 1
    return 0


def calls_list(assistant: Assistant, limit: int, days: float | None) -> int:
    print_calls(assistant.journal().store().recent_calls(limit=limit, since=_since(days)))
    return 0


def calls_show(assistant: Assistant, uniqueid: str) -> int:
    store = assistant.journal().store()
    call, turns = store.call_rows(uniqueid)
    if call is None:
        print(f"voiceassist: no call {uniqueid!r} in {store.where}", file=sys.stderr)
        return 1
    print_call(call, turns)
    return 0


def calls_export(assistant: Assistant, fmt: str, days: float | None, output: str | None) -> int:
    rows = assistant.journal().store().turn_rows(since=_since(days))
    if output:
        with open(output, "w", encoding="utf-8", newline="") as out:
            count = export_turns(rows, fmt, out)
        print(f"{count} turns written to {output}", file=sys.stderr)
    else:
        export_turns(rows, fmt)
    return 0


def calls_stats(assistant: Assistant, days: float | None, as_json: bool) -> int:
    stats = stage_statistics(assistant.journal().store().turn_rows(since=_since(days)))
    if as_json:
        print(json.dumps(stats, indent=2))
    elif not stats:
        print("no answered turns with timings yet")
    else:
        print_statistics(stats)
    return 0
