"""Prometheus metrics (``/metrics``), counted from the live feed every call process publishes.

Counting in the console rather than in each call process is what makes process AGI countable at
all (each turn is its own short process) and gives one endpoint for a box whatever serves its
calls. Counters start at zero when the console starts, as Prometheus expects of a restart.
Gauges of the spool and the outbox are read when scraped.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ...storage.schema import TIMED_STAGES, TURN_STATUSES

# Seconds: from a quick local answer to a slow cloud one.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
LABEL = re.compile(r"[a-z0-9_.-]{1,40}")
# Stages that are time taken (not the recording's length or how much of the answer was played).
LATENCY_STAGES = tuple(s for s in TIMED_STAGES if s not in ("recording", "played"))
SPOOL_SAMPLES = 24 * 60  # a day of minutes
PROVIDER_STAGES = {"stt": "stt_provider", "llm": "llm_provider", "tts": "tts_provider"}

# The names, for dashboards (README lists them with what they mean).
METRIC_NAMES = (
    "voiceassist_calls_total", "voiceassist_calls_ended_total", "voiceassist_turns_total",
    "voiceassist_provider_errors_total", "voiceassist_fallbacks_total", "voiceassist_actions_total",
    "voiceassist_speech_to_audio_seconds", "voiceassist_stage_seconds", "voiceassist_provider_seconds",
    "voiceassist_calls_in_progress", "voiceassist_spool_depth", "voiceassist_outbox_depth",
    "voiceassist_live_events_total",
)


def _label(value: Any, other: str = "other") -> str:
    """A label value from call data: a known shape, else ``other`` (no unbounded label sets)."""
    text = str(value or "").lower()
    return text if LABEL.fullmatch(text) else other


class _Depths(Collector):
    def __init__(self, spool_depth: Callable[[], int | None], outbox_depth: Callable[[], int | None]) -> None:
        self.spool_depth = spool_depth
        self.outbox_depth = outbox_depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, doc, read in (("voiceassist_spool_depth", "Turns waiting in the spool for the database", self.spool_depth),
                                ("voiceassist_outbox_depth", "Webhook events waiting in the outbox", self.outbox_depth)):
            value = read()
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)


class ConsoleMetrics:
    def __init__(self, spool_depth: Callable[[], int | None] = lambda: None,
                 outbox_depth: Callable[[], int | None] = lambda: None,
                 calls_in_progress: Callable[[], int] = lambda: 0) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created only doubles what dashboards read
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter("voiceassist_calls", "Calls started", ["extension"], registry=r)
        self.calls_ended = Counter("voiceassist_calls_ended", "Calls ended, by how they ended", ["state"], registry=r)
        self.turns = Counter("voiceassist_turns", "Turns stored, by status", ["status"], registry=r)
        self.provider_errors = Counter("voiceassist_provider_errors", "Provider failures, by provider and kind",
                                       ["capability", "provider", "kind"], registry=r)
        self.fallbacks = Counter("voiceassist_fallbacks", "Turns answered by a provider other than the chain's first "
                                 "after a failure", ["capability"], registry=r)
        self.actions = Counter("voiceassist_actions", "What the assistant did besides answering", ["action"], registry=r)
        self.speech_to_audio = Histogram("voiceassist_speech_to_audio_seconds",
                                         "End of the caller's speech to the first answer audio", registry=r,
                                         buckets=LATENCY_BUCKETS)
        self.stages = Histogram("voiceassist_stage_seconds", "Each stage of a turn", ["stage"], registry=r,
                                buckets=LATENCY_BUCKETS)
        self.providers = Histogram("voiceassist_provider_seconds", "Each provider's time in a turn",
                                   ["capability", "provider"], registry=r, buckets=LATENCY_BUCKETS)
        self.events = Counter("voiceassist_live_events", "Live events received from call processes", ["type"], registry=r)
        in_progress = Gauge("voiceassist_calls_in_progress", "Calls in progress (as the live feed knows them)", registry=r)
        in_progress.set_function(lambda: float(calls_in_progress()))
        r.register(_Depths(spool_depth, outbox_depth))
        self._spool_depth = spool_depth
        self._spool_samples: deque[tuple[dt.datetime, int]] = deque(maxlen=SPOOL_SAMPLES)
        self._failed_in_call: dict[str, set[str]] = {}

    def sample_spool(self) -> None:
        """Note the spool's depth now (the console does every minute, for the statistics page)."""
        depth = self._spool_depth()
        if depth is not None:
            self._spool_samples.append((dt.datetime.now(dt.timezone.utc), depth))

    def spool_samples(self) -> list[tuple[dt.datetime, int]]:
        return list(self._spool_samples)

    def observe(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        self.events.labels(kind).inc()
        if kind == "call.started" and not event.get("transcript"):  # a transcribed call is not the assistant's
            caller: dict[str, Any] = event["from"] if isinstance(event.get("from"), dict) else {}
            self.calls.labels(_label(caller.get("extension"))).inc()
        elif kind == "call.ended":
            self.calls_ended.labels(_label(event.get("state"))).inc()
            self._failed_in_call.pop(event["call"], None)
        elif kind == "provider.failed":
            capability = _label(event.get("capability"))
            self.provider_errors.labels(capability, _label(event.get("provider")), _label(event.get("kind"))).inc()
            if len(self._failed_in_call) < 10000:
                self._failed_in_call.setdefault(event["call"], set()).add(capability)
        elif kind == "turn.completed" and isinstance(event.get("turn"), dict):
            self._turn(event["call"], event["turn"])

    def _turn(self, call: str, turn: dict[str, Any]) -> None:
        status = turn.get("status")
        self.turns.labels(status if status in TURN_STATUSES else "other").inc()
        if turn.get("action"):
            self.actions.labels(_label(turn.get("action"))).inc()
        timings: dict[str, Any] = turn["timings_ms"] if isinstance(turn.get("timings_ms"), dict) else {}
        providers: dict[str, Any] = turn["providers"] if isinstance(turn.get("providers"), dict) else {}
        for stage in LATENCY_STAGES:
            value = _milliseconds(timings.get(stage))
            if value is None:
                continue
            self.stages.labels(stage).observe(value)
            if stage == "speech_to_audio":
                self.speech_to_audio.observe(value)
            if stage in PROVIDER_STAGES and providers.get(stage):
                self.providers.labels(stage, _label(providers.get(stage))).observe(value)
        for capability in self._failed_in_call.pop(call, set()):
            if status == "ok":
                self.fallbacks.labels(capability).inc()


def _milliseconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 3_600_000:
        return float(value) / 1000
    return None

