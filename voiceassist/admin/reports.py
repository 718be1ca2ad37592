"""What ``voiceassist calls`` prints: call lists, one conversation, exports and per-stage statistics.

Tables are drawn with rich on a terminal and written as plain tab-separated lines when the output
is piped (so ``grep``/``awk``/``cut`` work on them).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

from ..storage.schema import TIMED_STAGES

# Stages in the order a turn goes through them, with what they measure.
STAGE_LABELS = {
    "recording": "question length",
    "stt": "speech-to-text",
    "llm_first": "LLM first words",
    "llm": "LLM whole reply",
    "tts": "text-to-speech",
    "convert": "conversion",
    "first_audio": "turn start → first audio",
    "speech_to_audio": "end of speech → first audio",
    "total": "whole turn",
}
EXPORT_FORMATS = ("csv", "jsonl")

# Terminal control sequences (CSI, OSC, other ESC forms), then single control characters and the
# Unicode direction overrides: caller names and transcripts come from callers, and printed raw they
# could move the cursor, retitle the terminal, hide lines or reorder what the admin reads.
_ESCAPE_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP: CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(value: Any) -> str:
    """``value`` as text safe to print on the admin's terminal: no escape sequences, no control
    characters but the tab (each becomes a space, so a newline cannot forge a line)."""
    return _CONTROL.sub(" ", _ESCAPE_SEQUENCE.sub("", "" if value is None else str(value)))


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: strings that would start a formula get a ``'``."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def local_time(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str] | None = None,
                 right: Iterable[str] = ()) -> None:
    out = out or sys.stdout
    cells = [[printable(value) for value in row] for row in rows]
    if not out.isatty():
        out.write("\t".join(columns) + "\n")
        for row in cells:
            # Tabs and newlines inside a value (a caller name, a transcript) must not break the line.
            out.write("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    aligned = set(right)
    for column in columns:
        table.add_column(column, justify="right" if column in aligned else "left", overflow="fold")
    for row in cells:
        table.add_row(*row)
    Console(file=out, highlight=False).print(table, markup=False)


def call_outcome(row: dict[str, Any]) -> str:
    """How a call went, from its turns and how it ended: its last turn's status, except that a
    caller who was answered and then said nothing more (or hung up when asked for another
    question) had a good call."""
    status = row.get("status")
    if not status:
        return "-"
    if row.get("answered") and (status == "no_speech" or row.get("end_state") == "recording" and status == "hangup"
                                and not row.get("last_transcript")):
        return "ok"
    return str(status)


def print_calls(rows: Sequence[dict[str, Any]], out: IO[str] | None = None) -> None:
    """One line per call: when, who, how many turns, how it went, how fast it answered."""
    columns = ["started", "uniqueid", "caller", "turns", "answered", "status", "ended", "avg first audio ms"]
    lines = []
    for row in rows:
        caller = " ".join(part for part in (row.get("caller_number"), row.get("caller_name") and f"({row['caller_name']})") if part)
        lines.append([local_time(row["started_at"]), row["uniqueid"], caller, row["turns"], row["answered"],
                      call_outcome(row), row.get("end_state") or ("" if row.get("ended_at") else "in progress"),
                      row.get("avg_first_audio_ms")])
    _print_table(f"{len(rows)} most recent calls", columns, lines, out, right=("turns", "answered", "avg first audio ms"))


def print_call(call: dict[str, Any], turns: Sequence[dict[str, Any]], out: IO[str] | None = None) -> None:
    """The conversation of one call."""
    out = out or sys.stdout
    call = {key: printable(value) if isinstance(value, str) else value for key, value in call.items()}
    turns = [{key: printable(value) if isinstance(value, str) else value for key, value in turn.items()}
             for turn in turns]
    caller = " ".join(p for p in (call.get("caller_number"), call.get("caller_name") and f"({call['caller_name']})") if p)
    out.write(f"call {call['uniqueid']}  linkedid {call.get('linkedid') or '-'}  channel {call.get('channel') or '-'}\n")
    out.write(f"caller {caller or '-'}  extension {call.get('extension') or '-'}\n")
    out.write(f"started {local_time(call['started_at'])}  ended {local_time(call.get('ended_at')) or '-'}"
              f"  ({call.get('end_state') or 'no end recorded'})\n")
    if call.get("summary"):
        out.write(f"summary {_one_line(printable(call['summary']))}\n")
    for turn in turns:
        language = f"  in {turn['language']}" if turn.get("language") else ""
        out.write(f"\nturn {turn['turn_number']}  {turn['status']}  at {local_time(turn['started_at'])}{language}\n")
        if turn.get("transcript"):
            who = f"{turn['speaker']}:" if turn.get("speaker") else "caller:"  # a transcribed call's line
            out.write(f"  {who:<10} {_one_line(turn['transcript'])}\n")
        if turn.get("reply"):
            out.write(f"  assistant: {_one_line(turn['reply'])}\n")
        if turn.get("interrupted"):
            played = turn.get("played_ms")
            out.write(f"  interrupted by the caller{f' after {played / 1000:.1f} s' if played is not None else ''}; "
                      f"heard: {_one_line(turn.get('heard_reply') or '') or '(nothing)'}\n")
        if turn.get("action"):
            out.write(f"  action:    {turn['action']} {_one_line(turn.get('action_target') or '')}".rstrip() + "\n")
        if turn.get("error"):
            out.write(f"  error:     {_one_line(turn['error'])}\n")
        providers = "/".join(turn.get(f"{c}_provider") or "-" for c in ("stt", "llm", "tts"))
        timings = "  ".join(f"{stage} {turn[f'{stage}_ms']}" for stage in TIMED_STAGES
                            if turn.get(f"{stage}_ms") is not None)
        out.write(f"  providers {providers}  ms: {timings or '-'}\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def export_turns(rows: Iterable[dict[str, Any]], fmt: str, out: IO[str] | None = None) -> int:
    """Write every turn (with its call's ids and caller) as CSV or JSON lines; returns the count."""
    out = out or sys.stdout
    count = 0
    writer = None
    for row in rows:
        row = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
        if fmt == "jsonl":
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
                writer.writeheader()
            writer.writerow({key: spreadsheet_safe(value) for key, value in row.items()})
        count += 1
    return count


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return int(sorted_values[rank - 1])


def stage_statistics(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Count, p50, p90, p99 and max per timed stage, over answered turns."""
    values: dict[str, list[int]] = {stage: [] for stage in TIMED_STAGES}
    for row in rows:
        if row.get("status") != "ok":
            continue
        for stage in TIMED_STAGES:
            value = row.get(f"{stage}_ms")
            if value is not None:
                values[stage].append(int(value))
    stats = []
    for stage in TIMED_STAGES:
        data = sorted(values[stage])
        if not data:
            continue
        stats.append({"stage": stage, "what": STAGE_LABELS[stage], "turns": len(data),
                      "p50": percentile(data, 0.5), "p90": percentile(data, 0.9),
                      "p99": percentile(data, 0.99), "max": data[-1]})
    return stats


def print_statistics(stats: Sequence[dict[str, Any]], out: IO[str] | None = None) -> None:
    columns = ["stage", "what", "turns", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    lines = [[s["stage"], s["what"], s["turns"], s["p50"], s["p90"], s["p99"], s["max"]] for s in stats]
    _print_table("Per-stage times of answered turns", columns, lines, out,
                 right=("turns", "p50 ms", "p90 ms", "p99 ms", "max ms"))
