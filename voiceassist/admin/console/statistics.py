"""The statistics page's figures: latency percentiles per hour or day, calls and turns per day,
error rates by provider and status, and the spool's depth, as SVG plots and small tables."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from .charts import bar_chart, line_chart
from .metrics import ConsoleMetrics

STAGES_SHOWN = ("stt", "llm_first", "tts", "first_audio")
ERROR_STAGE = {"stt_error": "stt_provider", "llm_error": "llm_provider", "tts_error": "tts_provider"}


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (sorted here), or None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(fraction * len(ordered) + 0.5))))
    return float(ordered[rank - 1])


def _buckets(since: dt.datetime, days: int) -> tuple[list[dt.datetime], dt.timedelta, str]:
    """Hours for two days or less, else days; with their label format."""
    if days <= 2:
        step, fmt = dt.timedelta(hours=1), "%m-%d %H:00"
        start = since.replace(minute=0, second=0, microsecond=0)
    else:
        step, fmt = dt.timedelta(days=1), "%m-%d"
        start = since.replace(hour=0, minute=0, second=0, microsecond=0)
    now = dt.datetime.now(dt.timezone.utc)
    starts = []
    while start <= now:
        starts.append(start)
        start += step
    return starts, step, fmt


def statistics_page(rows: Sequence[dict[str, Any]], since: dt.datetime, days: int,
                    metrics: ConsoleMetrics | None = None) -> dict[str, Any]:
    starts, step, fmt = _buckets(since, days)
    first = starts[0]

    def bucket(moment: dt.datetime) -> int:
        return min(len(starts) - 1, max(0, int((moment - first) / step)))

    latency: list[list[float]] = [[] for _ in starts]
    stages: dict[str, list[list[float]]] = {s: [[] for _ in starts] for s in STAGES_SHOWN}
    turns_by_status: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(starts))
    calls: list[set[int]] = [set() for _ in starts]
    providers: dict[str, dict[str, int]] = defaultdict(lambda: {"turns": 0, "errors": 0})
    for row in rows:
        index = bucket(row["started_at"])
        calls[index].add(row["call_id"])
        status = row["status"] if row["status"] in ("ok", "no_speech", "hangup") else "error"
        turns_by_status[status][index] += 1
        if row.get("speech_to_audio_ms") is not None:
            latency[index].append(row["speech_to_audio_ms"])
        for stage in STAGES_SHOWN:
            if row.get(f"{stage}_ms") is not None:
                stages[stage][index].append(row[f"{stage}_ms"])
        for column in ("stt_provider", "llm_provider", "tts_provider"):
            if row.get(column):
                providers[f"{column[:3]}: {row[column]}"]["turns"] += 1
        failed = ERROR_STAGE.get(row["status"])
        if failed and row.get(failed):
            providers[f"{failed[:3]}: {row[failed]}"]["errors"] += 1
    labels = [start.strftime(fmt) for start in starts]
    unit = "hour" if step == dt.timedelta(hours=1) else "day"
    charts = {
        "latency": line_chart({name: list(zip(labels, [percentile(v, q) for v in latency]))
                               for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
                              title=f"End of speech → first audio, per {unit}", unit="ms"),
        "stages": line_chart({stage: list(zip(labels, [percentile(v, 0.5) for v in stages[stage]]))
                              for stage in STAGES_SHOWN},
                             title=f"Median time of each stage, per {unit}", unit="ms"),
        "calls": bar_chart(list(zip(labels, [float(len(c)) for c in calls])), title=f"Calls per {unit}", unit="calls"),
        "turns": bar_chart(list(zip(labels, [sum(v[i] for v in turns_by_status.values()) for i in range(len(starts))])),
                           title=f"Turns per {unit}, by status", unit="turns",
                           stacked={status: turns_by_status[status] for status in sorted(turns_by_status)}),
    }
    spool = metrics.spool_samples() if metrics is not None else []
    if spool:
        charts["spool"] = line_chart({"turns waiting": [(moment.strftime("%H:%M"), float(depth)) for moment, depth in spool]},
                                     title="Spool depth (turns waiting for the database), since the console started",
                                     unit="turns")
    table = [{"provider": name, "turns": v["turns"], "errors": v["errors"],
              "rate": f"{100 * v['errors'] / v['turns']:.1f} %" if v["turns"] else "–"}
             for name, v in sorted(providers.items())]
    statuses = {status: int(sum(values)) for status, values in sorted(turns_by_status.items())}
    return {"charts": {name: Markup(svg) for name, svg in charts.items()}, "providers": table, "statuses": statuses,
            "turns": len(rows), "latency_p50": percentile([v for b in latency for v in b], 0.5),
            "latency_p90": percentile([v for b in latency for v in b], 0.9)}
