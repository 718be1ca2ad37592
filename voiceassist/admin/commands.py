"""The admin commands behind ``voiceassist db ...`` and ``voiceassist calls ...``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from ..call.assistant import Assistant
from ..errors import ConfigError, StorageError
from .reports import export_turns, print_call, print_calls, print_statistics, stage_statistics


def _since(days: float | None) -> dt.datetime | None:
    if days is None:
        return None
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)


def run_db_command(assistant: Assistant, args: argparse.Namespace) -> int:
    journal = assistant.journal()
    if args.db_command == "upgrade":
        from ..storage.migrate import upgrade

        before, after = upgrade(journal.store())
        if before == after:
            print(f"{journal.store().where}: schema already at revision {after}")
        else:
            print(f"{journal.store().where}: schema upgraded from {before or 'empty'} to revision {after}")
        return 0
    if args.db_command == "status":
        from ..storage.migrate import head_revision

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
    if args.db_command == "flush":
        result = journal.flush()
        if result.error:
            print(f"voiceassist: database still unavailable, {result.pending} entries stay in the spool: {result.error}",
                  file=sys.stderr)
        print(f"stored {result.stored}, already there {result.duplicates}, rejected {result.rejected}, "
              f"waiting {result.pending}")
        if result.rejected:
            print(f"rejected entries were moved to {journal.spool.directory / 'rejected'}", file=sys.stderr)
        return 1 if (result.error or result.rejected) else 0
    if args.db_command == "prune":
        return _prune(assistant, args)
    raise ConfigError(f"unknown db action {args.db_command!r}")


def _prune(assistant: Assistant, args: argparse.Namespace) -> int:
    from ..storage.retention import prune

    privacy = assistant.config.settings("privacy")
    days = args.days if args.days is not None else privacy.retention_days
    audio_days = args.audio_days if args.audio_days is not None else privacy.audio_retention_days
    if days <= 0 and audio_days <= 0:
        print("nothing to prune: [privacy] retention_days is 0 and audio_retention_days is 0 (keep forever); "
              "use --days N")
        return 0
    report = prune(assistant.journal(), assistant.config.settings("general").answer_dir, days=days,
                   audio_days=audio_days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    if days > 0 and report.storage_error is None:
        print(f"{verb} {report.calls} calls, {report.turns} turns and their audio older than {days} days")
    if audio_days > 0:
        print(f"{verb} {report.audio_files} recordings and answers older than {audio_days} days "
              f"({report.audio_bytes / 1e6:.1f} MB)")
    if report.storage_error:
        print(f"voiceassist: database: {report.storage_error}", file=sys.stderr)
        return 1
    return 0


def run_calls_command(assistant: Assistant, args: argparse.Namespace) -> int:
    store = assistant.journal().store()
    action = args.calls_command
    if action is None:
        print_calls(store.recent_calls(limit=args.limit, since=_since(args.days)))
        return 0
    if action == "show":
        call, turns = store.call_rows(args.uniqueid)
        if call is None:
            print(f"voiceassist: no call {args.uniqueid!r} in {store.where}", file=sys.stderr)
            return 1
        print_call(call, turns)
        return 0
    if action == "export":
        rows = store.turn_rows(since=_since(args.days))
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                count = export_turns(rows, args.format, out)
            print(f"{count} turns written to {args.output}", file=sys.stderr)
        else:
            export_turns(rows, args.format)
        return 0
    if action == "stats":
        stats = stage_statistics(store.turn_rows(since=_since(args.days)))
        if args.json:
            print(json.dumps(stats, indent=2))
        elif not stats:
            print("no answered turns with timings yet")
        else:
            print_statistics(stats)
        return 0
    raise ConfigError(f"unknown calls action {action!r}")
