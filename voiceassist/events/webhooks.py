"""Webhooks: each event of a call POSTed, signed, to every receiver in ``[webhooks] urls``.

:func:`emit` only writes the event to the outbox (:mod:`.outbox`, one entry per receiver): no
network, so a call never waits on a receiver. A :class:`WebhookSender` (a thread of the FastAGI
server, or one pass at the end of a process-AGI call) sends what is due.

What a receiver gets: ``POST`` with the JSON body ``{"created", "data", "id", "type"}`` (UTF-8,
compact, keys sorted) and the headers ``X-Voiceassist-Event`` (the type), ``X-Voiceassist-Event-Id``
and ``X-Voiceassist-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>`` keyed with
``[webhooks] secret`` (:func:`sign`). A receiver checks it with :func:`verify` or the equivalent:
recompute the HMAC over the raw body, compare in constant time, and refuse a ``t`` more than five
minutes from its own clock (a recorded request replayed later). The timestamp is the attempt's,
so a retried event is signed afresh.

Delivery: a 2xx answer settles it. 408, 425, 429, 5xx, a refused connection or a timeout are tried
again after 5 s, 10 s, 20 s ... (at most 10 minutes; longer if the receiver's ``Retry-After``
asks), until the event is ``max_age_hours`` old: then it goes to ``rejected/`` with the last error.
Any other answer (a 404, a redirect) goes to ``rejected/`` at once, with the status. Each receiver
gets its events in the order they were made; the same event may arrive twice after a crash (at
least once), so receivers recognise repeats by the event id.

Event data is text from callers (transcripts, caller IDs): it travels only JSON-encoded in the
body, never in a header or a URL.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..config import Webhooks
from ..errors import UnsafePath
from ..logs import logger
from .outbox import ClaimedEntry, Outbox, OutboxEntry

# -- events ------------------------------------------------------------------------------------

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_last_created = 0.0
_created_lock = threading.Lock()


@dataclass(frozen=True)
class Event:
    """Something that happened in a call, as every receiver gets it."""

    id: str                    # uuid4 hex: receivers recognise a repeated delivery by it
    type: str                  # one of EVENT_TYPES
    created: float             # epoch seconds
    data: dict[str, Any]       # JSON values only

    def body(self) -> bytes:
        """The request body: compact UTF-8 JSON, keys sorted."""
        return json.dumps({"id": self.id, "type": self.type, "created": self.created, "data": self.data},
                          ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def new_event(type: str, data: Mapping[str, Any]) -> Event:
    """An event of ``type`` made now, with a copy of ``data`` as JSON carries it.

    Raises:
        ValueError: ``type`` is not a dotted lower-case name, or ``data`` holds something JSON
            cannot carry (an object, NaN).
    """
    if not _EVENT_TYPE.fullmatch(type) or len(type) > 64:
        raise ValueError(f"event type {type!r} is not a dotted lower-case name")
    return Event(uuid.uuid4().hex, type, _creation_time(), _as_json(data))


def _creation_time() -> float:
    """Now to the microsecond, and always after the previous event of this process: the outbox
    sends in creation order, and two events in one microsecond would otherwise tie."""
    global _last_created
    with _created_lock:
        now = round(time.time(), 6)
        if now <= _last_created:
            now = round(_last_created + 1e-6, 6)
        _last_created = now
        return now


def _as_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` through a JSON round trip (tuples become lists, keys strings), with lone surrogates
    (what Python makes of bytes that were not UTF-8, e.g. in a caller ID) replaced by U+FFFD, so
    that the body is valid UTF-8 and every receiver reads the same text."""
    try:
        plain = json.loads(json.dumps(dict(data), ensure_ascii=True, allow_nan=False))
    except (TypeError, RecursionError) as exc:
        raise ValueError(f"event data is not JSON: {exc}") from None
    cleaned = _without_lone_surrogates(plain)
    assert isinstance(cleaned, dict)
    return cleaned


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(key): _without_lone_surrogates(item) for key, item in value.items()}
    return value


def _event_from(record: Mapping[str, Any]) -> Event:
    """The event an outbox entry holds (its data cleaned again: the file may not be ours)."""
    return Event(str(record["id"]), str(record["type"]), float(record["created"]), _as_json(record["data"]))


# -- signatures --------------------------------------------------------------------------------

def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Voiceassist-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``, the HMAC keyed
    with ``secret`` (UTF-8) over ``"<timestamp>."`` followed by the raw body. The timestamp is
    signed with the body, so a receiver that refuses old timestamps refuses replays too."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """Whether ``header`` (an ``X-Voiceassist-Signature`` value) signs ``body`` with ``secret`` at
    a time within ``tolerance`` seconds of ``now``. Signatures are compared in constant time; any
    ``v1`` of several may match (a receiver may list one per secret while secrets change)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and re.fullmatch(r"[0-9]{1,12}", value):
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures or abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2].encode("ascii")
    return any(hmac.compare_digest(expected, candidate.encode("utf-8", "replace")) for candidate in signatures)


# -- emitting ----------------------------------------------------------------------------------

_senders: list[WebhookSender] = []
_senders_lock = threading.Lock()


def emit(settings: Webhooks, outbox: Outbox, type: str, data: Mapping[str, Any]) -> Event | None:
    """Queue an event of ``type`` for every receiver, if webhooks are configured and ``type`` is
    one of ``[webhooks] events``, and wake this process's sender. No network: a file written
    and fsync'd per receiver. Never raises: an event that cannot be queued is logged as an error
    (and lost, the only case where one is). Returns the event, or ``None`` if none was queued."""
    if not settings.urls or type not in settings.events:
        return None
    if not settings.secret:
        logger.error("[webhooks] %s event not sent: [webhooks] secret is empty and requests are never sent unsigned",
                     type)
        return None
    try:
        event = new_event(type, data)
    except ValueError as exc:
        logger.error("[webhooks] %s event not sent: %s", type, exc)
        return None
    queued = 0
    for url in dict.fromkeys(settings.urls):
        try:
            outbox.add(event, url)
            queued += 1
        except Exception as exc:  # whatever happens, the call goes on
            logger.error("[webhooks] %s event %s for %s lost: the outbox %s cannot take it: %s",
                         type, event.id, describe_url(url), outbox.directory, exc)
    if not queued:
        return None
    with _senders_lock:
        running = [sender for sender in _senders if sender.outbox.directory == outbox.directory and sender.running]
    for sender in running:
        sender.notify()
    return event


def describe_url(url: str) -> str:
    """``https://host/...`` for logs: paths and queries often hold a receiver's token."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    return f"{parts.scheme}://{host}{port}/..."


# -- sending -----------------------------------------------------------------------------------

FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 600.0
# A receiver's Retry-After is honoured up to this; beyond it the receiver is probably confused.
MAX_RETRY_AFTER_SECONDS = 3600.0
RETRIED_STATUSES = frozenset({408, 425, 429})


@dataclass
class DeliveryReport:
    """What one :meth:`WebhookSender.deliver_due` pass did."""

    delivered: int = 0        # answered 2xx
    retried: int = 0          # failed for now: back in pending/ for a later attempt
    rejected: int = 0         # given up: in rejected/
    recovered: int = 0        # claims of dead processes taken back
    unfinished: bool = False  # the budget ran out (or the sender stopped) with entries due
    errors: list[str] = field(default_factory=list)  # the outbox itself failed


@dataclass(frozen=True)
class _Outcome:
    delivered: bool = False
    retry: bool = False
    reason: str = ""
    retry_after: float | None = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: urllib would resend a POST as a GET without its body, or
    to another host; it is reported (and the event rejected) so the admin sets the final URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSender:
    """Sends the outbox's due entries: one pass with :meth:`deliver_due`, or a daemon thread
    (:meth:`start`) that sends whenever :func:`emit` wakes it and every ``poll_interval`` seconds.

    ``clock`` (wall-clock epoch seconds) decides what is due and how old an event is; tests pass
    a fake one. ``first_retry`` and ``max_retry`` bound the backoff between attempts.
    """

    def __init__(self, settings: Webhooks, outbox: Outbox, *, clock: Callable[[], float] = time.time,
                 first_retry: float = FIRST_RETRY_SECONDS, max_retry: float = MAX_RETRY_SECONDS,
                 poll_interval: float = 5.0, pass_budget: float = 60.0) -> None:
        self.settings = settings
        self.outbox = outbox
        self.clock = clock
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.poll_interval = poll_interval
        self.pass_budget = pass_budget
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._warned_unsigned = False

    # -- one pass ---------------------------------------------------------------------------------
    def deliver_due(self, budget_seconds: float = 60.0) -> DeliveryReport:
        """Claim and send due entries, oldest first, until none is left or ``budget_seconds`` have
        passed (an attempt under way when they pass is finished: up to ``[webhooks] timeout`` more).
        An entry waits while an earlier one for its receiver waits (order per receiver); the other
        receivers go on."""
        report = DeliveryReport()
        if not self.settings.urls:
            return report  # webhooks switched off: what is queued waits, it is not rejected
        if not self.settings.secret:
            if not self._warned_unsigned:
                self._warned_unsigned = True
                logger.error("[webhooks] nothing sent: [webhooks] secret is empty and requests are never sent unsigned")
            report.errors.append("[webhooks] secret is empty")
            return report
        deadline = time.monotonic() + budget_seconds
        try:
            # Claims are timed by the file system, so their age is measured on the wall clock.
            report.recovered = self.outbox.recover_stale(time.time())
            due = self.outbox.due(self.clock())
        except (OSError, UnsafePath) as exc:
            logger.error("[webhooks] the outbox %s cannot be used: %s", self.outbox.directory, exc)
            report.errors.append(str(exc))
            return report
        held_back: set[str] = set()
        for entry in due:
            if time.monotonic() >= deadline or self._stopping.is_set():
                report.unfinished = True
                break
            key = entry.destination_key
            if key in held_back:
                continue
            try:
                if not self._settle(entry, report):
                    held_back.add(key)
            except (OSError, UnsafePath) as exc:
                logger.error("[webhooks] the outbox %s failed on %s: %s", self.outbox.directory, entry.name, exc)
                report.errors.append(str(exc))
                held_back.add(key)
        return report

    def _settle(self, entry: OutboxEntry, report: DeliveryReport) -> bool:
        """Claim, send and settle one entry; False if the later entries for its receiver must wait."""
        claimed = self.outbox.claim(entry)
        if claimed is None:
            return False  # another process is on it, or has just done it
        now = self.clock()
        if claimed.next_at > now:
            self.outbox.release(claimed)  # retried by another process since we listed it
            return False
        reason = self._refusal(claimed, now)
        if reason:
            self._reject(claimed, reason, report)
            return True
        outcome = self._post(_event_from(claimed.event), claimed.destination)
        if outcome.delivered:
            self.outbox.delivered(claimed)
            report.delivered += 1
            logger.debug("[webhooks] %s %s delivered to %s", claimed.event["type"], claimed.event["id"],
                        describe_url(claimed.destination))
            return True
        if not outcome.retry:
            self._reject(claimed, outcome.reason, report)
            return True
        delay = min(self.first_retry * 2 ** min(claimed.attempts, 30), self.max_retry)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER_SECONDS))
        self.outbox.retry_later(claimed, outcome.reason, now + delay)
        report.retried += 1
        logger.warning("[webhooks] %s %s to %s failed (attempt %d), next in %.0f s: %s", claimed.event["type"],
                       claimed.event["id"], describe_url(claimed.destination), claimed.attempts + 1, delay,
                       outcome.reason)
        return False

    def _refusal(self, claimed: ClaimedEntry, now: float) -> str:
        """Why ``claimed`` is not to be sent at all ("" if it is)."""
        max_age = self.settings.max_age_hours * 3600
        if now - float(claimed.event["created"]) > max_age:
            return (f"not delivered within {self.settings.max_age_hours:g} hours ({claimed.attempts} attempts); "
                    f"last error: {claimed.last_error or 'none'}")
        if not _EVENT_TYPE.fullmatch(str(claimed.event["type"])):
            return f"{str(claimed.event['type'])[:80]!r} is not an event type"  # it would go into a header
        # Only to receivers configured now: an entry planted in the outbox (or left from an old
        # configuration) must not make us POST, signed, wherever it says.
        if claimed.destination not in self.settings.urls:
            return f"{describe_url(claimed.destination)} is not in [webhooks] urls (any more)"
        if urllib.parse.urlsplit(claimed.destination).scheme not in ("http", "https"):
            return f"{describe_url(claimed.destination)} is not an http:// or https:// URL"
        return ""

    def _reject(self, claimed: ClaimedEntry, reason: str, report: DeliveryReport) -> None:
        self.outbox.reject(claimed, reason)
        report.rejected += 1
        logger.error("[webhooks] %s %s to %s rejected: %s", claimed.event["type"], claimed.event["id"],
                     describe_url(claimed.destination), reason)

    def _post(self, event: Event, url: str) -> _Outcome:
        """One attempt: POST ``event`` to ``url``, signed now."""
        body = event.body()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": f"voiceassist/{__version__}",
            "X-Voiceassist-Event": event.type,
            "X-Voiceassist-Event-Id": event.id,
            "X-Voiceassist-Signature": sign(self.settings.secret, int(self.clock()), body),
        })
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as response:
                response.read(64 * 1024)  # the answer is not used; read a little so the connection ends cleanly
                return _Outcome(delivered=True)
        except urllib.error.HTTPError as exc:
            status, retry_after = exc.code, exc.headers.get("Retry-After") if exc.headers else None
            exc.close()
            reason = f"HTTP {status} {str(exc.reason)[:100]!r}"
            if status in RETRIED_STATUSES or 500 <= status <= 599:
                return _Outcome(retry=True, reason=reason, retry_after=_retry_after_seconds(retry_after, self.clock()))
            if 300 <= status <= 399:
                reason += " (a redirect: set the final URL in [webhooks] urls)"
            return _Outcome(reason=reason)
        except ValueError as exc:  # an invalid URL (http.client.InvalidURL is one)
            return _Outcome(reason=f"invalid URL: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            # Refused, unreachable, timed out, reset, a broken answer: the receiver may be back later.
            # (urllib.error.URLError and TimeoutError are OSErrors.)
            cause = getattr(exc, "reason", None) or exc
            return _Outcome(retry=True, reason=f"{type(exc).__name__}: {cause}"[:300])

    # -- the thread ---------------------------------------------------------------------------------
    def notify(self) -> None:
        """Something was queued: the thread sends it now rather than at its next poll."""
        self._wake.set()

    def start(self) -> None:
        """Run :meth:`deliver_due` in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        with _senders_lock:
            _senders.append(self)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the attempt under way, if any)."""
        self._stopping.set()
        self._wake.set()
        with _senders_lock:
            if self in _senders:
                _senders.remove(self)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        # A forked worker inherits the sender but not its thread.
        return self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass: an event queued during it wakes the next one
            try:
                self.deliver_due(self.pass_budget)
            except Exception:  # the thread must outlive any one failure
                logger.exception("[webhooks] delivery pass failed")
            self._wake.wait(self.poll_interval)


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date (``None`` if neither)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


# -- asking, not telling: the caller lookup --------------------------------------------------------
MAX_LOOKUP_BYTES = 16 * 1024
MAX_FACT_CHARS = 300


def look_up(settings: Webhooks, event: Event) -> dict[str, str]:
    """POST ``event`` (``call.started``) to ``[webhooks] lookup_url``, signed as every event, and
    return the facts its JSON object answer gives ({} on any failure or after ``lookup_timeout``:
    the call goes on without them). Values are cut to a few hundred characters each."""
    if not settings.lookup_url or not settings.secret:
        return {}
    body = event.body()
    request = urllib.request.Request(settings.lookup_url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json",
        "User-Agent": f"voiceassist/{__version__}", "X-Voiceassist-Event": event.type,
        "X-Voiceassist-Event-Id": event.id, "X-Voiceassist-Signature": sign(settings.secret, int(time.time()), body)})
    try:
        with urllib.request.build_opener(_NoRedirects).open(request, timeout=settings.lookup_timeout) as response:
            answer = json.loads(response.read(MAX_LOOKUP_BYTES + 1)[:MAX_LOOKUP_BYTES])
    except (OSError, ValueError, http.client.HTTPException) as exc:
        logger.warning("[webhooks] caller lookup at %s gave nothing: %s", describe_url(settings.lookup_url),
                       str(getattr(exc, "reason", None) or exc)[:200])
        return {}
    if not isinstance(answer, dict):
        return {}
    facts = {}
    for key, value in list(answer.items())[:20]:
        if isinstance(value, str | int | float | bool) and str(value).strip():
            facts[str(key)[:40]] = " ".join(str(value).split())[:MAX_FACT_CHARS]
    return facts
