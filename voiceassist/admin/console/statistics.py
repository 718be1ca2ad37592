"""The statistics page's figures: latency percentiles per hour or day, calls and turns per day,
error rates by provider and status, and the spool's depth, as SVG plots and small tables.

The turns arrive column by column and are counted with numpy: a month of a busy PBX (100 000
turns) is a few hundred milliseconds, most of it reading them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from markupsafe import Markup

from .charts import bar_chart, line_chart
from .metrics import ConsoleMetrics

STAGES_SHOWN = ("stt", "llm_first", "tts", "first_audio")
STAGES_READ = ("speech_to_audio", *STAGES_SHOWN)
ERROR_STAGE = {"stt_error": "stt_provider", "llm_error": "llm_provider", "tts_error": "tts_provider"}
STATUS_GROUPS = ("ok", "no_speech", "hangup")  # every other status counts as "error"


def percentile(values: Sequence[float] | np.ndarray, fraction: float) -> float | None:
    """The nearest-rank percentile of ``values``, or None for none."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), fraction * 100, method="inverted_cdf"))


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


def _numbers(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def statistics_page(columns: dict[str, list[Any]], since: dt.datetime, days: int,
                    metrics: ConsoleMetrics | None = None) -> dict[str, Any]:
    starts, step, fmt = _buckets(since, days)
    count = len(starts)
    first, seconds = starts[0].replace(tzinfo=None), step.total_seconds()  # the column's times: naive UTC
    moments = np.array(columns["started_at"], dtype="datetime64[ms]")
    bucket = np.clip(((moments - np.datetime64(first, "ms")) // np.timedelta64(int(seconds), "s")).astype(int),
                     0, count - 1)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(count + 1))

    def per_bucket(values: np.ndarray, fraction: float) -> list[float | None]:
        ordered = values[order]
        found = []
        for b in range(count):
            chunk = ordered[bounds[b]:bounds[b + 1]]
            chunk = chunk[~np.isnan(chunk)]
            found.append(percentile(chunk, fraction))
        return found

    timings = {stage: _numbers(columns[f"{stage}_ms"]) for stage in STAGES_READ}
    latency = timings["speech_to_audio"]
    status = np.array(columns["status"], dtype=object)
    grouped = np.where(np.isin(status, STATUS_GROUPS), status, "error")
    turns_by_status = {name: np.bincount(bucket[grouped == name], minlength=count).astype(float)
                       for name in sorted(set(grouped.tolist()))}
    calls = np.zeros(count)
    if len(bucket):
        pairs = np.unique(np.stack([bucket, np.array(columns["call_id"], dtype=int)]), axis=1)
        calls = np.bincount(pairs[0], minlength=count).astype(float)
    labels = [start.strftime(fmt) for start in starts]
    unit = "hour" if step == dt.timedelta(hours=1) else "day"
    charts = {
        "latency": line_chart({name: list(zip(labels, per_bucket(latency, q)))
                               for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
                              title=f"End of speech → first audio, per {unit}", unit="ms"),
        "stages": line_chart({stage: list(zip(labels, per_bucket(timings[stage], 0.5))) for stage in STAGES_SHOWN},
                             title=f"Median time of each stage, per {unit}", unit="ms"),
        "calls": bar_chart(list(zip(labels, calls.tolist())), title=f"Calls per {unit}", unit="calls"),
        "turns": bar_chart(list(zip(labels, sum(turns_by_status.values(), np.zeros(count)).tolist())),
                           title=f"Turns per {unit}, by status", unit="turns",
                           stacked={name: values.tolist() for name, values in turns_by_status.items()}),
    }
    spool = metrics.spool_samples() if metrics is not None else []
    if spool:
        charts["spool"] = line_chart({"turns waiting": [(moment.strftime("%H:%M"), float(depth)) for moment, depth in spool]},
                                     title="Spool depth (turns waiting for the database), since the console started",
                                     unit="turns")
    used: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for column in ("stt_provider", "llm_provider", "tts_provider"):
        used.update(f"{column[:3]}: {name}" for name in columns[column] if name)
    for index, state in enumerate(columns["status"]):
        failing = ERROR_STAGE.get(state)
        if failing and columns[failing][index]:
            failed[f"{failing[:3]}: {columns[failing][index]}"] += 1
    table = [{"provider": name, "turns": used[name], "errors": failed[name],
              "rate": f"{100 * failed[name] / used[name]:.1f} %" if used[name] else "–"} for name in sorted(used)]
    valid = latency[~np.isnan(latency)]
    stage_table = []
    for stage in STAGES_READ:
        values = timings[stage][~np.isnan(timings[stage])]
        stage_table.append({"stage": stage, "turns": len(values),
                            **{name: percentile(values, q) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}})
    return {"charts": {name: Markup(svg) for name, svg in charts.items()}, "providers": table, "stages": stage_table,
            "statuses": {name: int(values.sum()) for name, values in turns_by_status.items()},
            "turns": len(columns["status"]), "latency_p50": percentile(valid, 0.5),
            "latency_p90": percentile(valid, 0.9)}
