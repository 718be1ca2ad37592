"""Webhooks: every event reaches every receiver signed, in order, at least once and without a
repeat in normal operation, whatever the receivers do; a call never waits for them; the outbox
survives what the asterisk user may plant in it."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import pytest

from harness.webhook_receiver import Receiver
from voiceassist import __version__
from voiceassist.config import Webhooks
from voiceassist.events.outbox import STALE_CLAIM_SECONDS, Outbox, OutboxEntry
from voiceassist.events.webhooks import DeliveryReport, WebhookSender, emit, new_event, sign, verify

SECRET = "whsec-test-0123456789"
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for(*urls: str, **changes) -> Webhooks:
    return replace(Webhooks(urls=urls, secret=SECRET, outbox_dir="/nonexistent"), **changes)


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def first_waiting(outbox: Outbox) -> OutboxEntry:
    """The oldest pending entry (retried until it is not in the sender's hands at the moment)."""
    while not (entries := outbox.due(time.time() + 3600)):
        time.sleep(0.005)
    return entries[0]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- signing and order ---------------------------------------------------------------------------

def test_every_event_arrives_signed_and_in_order(receiver, tmp_path):
    settings, outbox = settings_for(receiver.url()), Outbox(tmp_path / "outbox")
    events = [emit(settings, outbox, "turn.completed", {"turn": n, "reply": f"answer {n}"}) for n in range(20)]
    report = WebhookSender(settings, outbox).deliver_due()
    assert report.delivered == 20 and not report.retried and not report.rejected
    assert receiver.ids() == [event.id for event in events]
    for request, event in zip(receiver.received, events):
        headers = request.headers
        assert {"Content-Type", "User-Agent", "X-Voiceassist-Event", "X-Voiceassist-Event-Id",
                "X-Voiceassist-Signature"} <= set(headers.keys())      # spelled as documented on the wire
        assert verify(SECRET, headers["X-Voiceassist-Signature"], request.body, now=time.time())
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"] == f"voiceassist/{__version__}"
        assert headers["X-Voiceassist-Event"] == "turn.completed"
        assert headers["X-Voiceassist-Event-Id"] == event.id
        assert request.event == {"id": event.id, "type": "turn.completed", "created": event.created, "data": event.data}
        # Compact UTF-8 with sorted keys: what a receiver's HMAC is computed over is predictable.
        assert request.body == json.dumps(request.event, sort_keys=True, separators=(",", ":"),
                                          ensure_ascii=False).encode("utf-8")
    assert outbox.counts() == {"pending": 0, "sending": 0, "rejected": 0}


def test_a_signature_holds_only_for_its_body_its_secret_and_five_minutes():
    body = b'{"id":"1"}'
    header = sign(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=1_700_000_000 + 299)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_000)
    assert not verify("another secret", header, body, now=1_700_000_000)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)       # a replay, later
    assert not verify(SECRET, header, body, now=1_700_000_000 - 301)
    assert not verify(SECRET, header.replace("t=1700000000", "t=1700000100"), body, now=1_700_000_100)
    assert not verify(SECRET, "v1=" + header.split("v1=")[1], body, now=1_700_000_000)
    assert not verify(SECRET, "t=1700000000,v1=ünïcode", body, now=1_700_000_000)
    assert verify(SECRET, header + ",v1=" + "0" * 64, body, now=1_700_000_000)  # one of several may match


def test_emit_queues_nothing_without_urls_for_unlisted_types_or_without_a_secret(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    assert emit(Webhooks(), outbox, "call.started", {}) is None
    assert emit(settings_for("http://127.0.0.1:9/", events=("call.ended",)), outbox, "call.started", {}) is None
    assert emit(settings_for("http://127.0.0.1:9/", secret=""), outbox, "call.started", {}) is None
    assert not (tmp_path / "outbox").exists()


# -- receivers that fail ----------------------------------------------------------------------------

def test_events_queued_while_the_receiver_is_down_arrive_once_it_is_back(tmp_path):
    receiver = Receiver()
    port, url = receiver.port, receiver.url()
    receiver.stop()
    settings, outbox = settings_for(url), Outbox(tmp_path / "outbox")
    sender = WebhookSender(settings, outbox, first_retry=0.1, max_retry=0.3, poll_interval=0.05)
    sender.start()
    try:
        events = [emit(settings, outbox, "call.started", {"n": n}) for n in range(5)]
        # Down: the first one is tried again and again, the others wait behind it.
        assert wait_until(lambda: first_waiting(outbox).attempts >= 3)
        first = first_waiting(outbox)
        assert first.event["id"] == events[0].id and "refused" in first.last_error.lower()
        assert receiver.received == [] and sum(outbox.counts().values()) == 5
        receiver = Receiver(port=port, statuses=deque([500]))   # back, with one more failure
        assert wait_until(lambda: len(receiver.ids()) >= 6 and outbox.counts()["pending"] == 0)
    finally:
        sender.stop()
        receiver.stop()
    # The 500 was answered to the first event; each id then got exactly one 2xx, in order.
    assert receiver.ids() == [events[0].id] + [event.id for event in events]
    assert outbox.counts() == {"pending": 0, "sending": 0, "rejected": 0}


def test_a_dead_receiver_holds_back_only_its_own_events(receiver, tmp_path):
    dead = f"http://127.0.0.1:{unused_port()}/hook"
    settings, outbox = settings_for(dead, receiver.url()), Outbox(tmp_path / "outbox")
    events = [emit(settings, outbox, "call.ended", {"n": n}) for n in range(3)]
    report = WebhookSender(settings, outbox).deliver_due()
    assert receiver.ids() == [event.id for event in events]
    # One attempt for the dead one: its next two wait behind the first.
    assert (report.delivered, report.retried) == (3, 1)
    assert outbox.counts()["pending"] == 3


@pytest.mark.parametrize("status", [404, 400, 401, 410, 302])
def test_a_refusal_is_rejected_at_once_with_the_status_as_the_reason(receiver, tmp_path, status):
    receiver.status = status
    receiver.answer_headers = {"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else {}
    settings, outbox = settings_for(receiver.url()), Outbox(tmp_path / "outbox")
    event = emit(settings, outbox, "message.taken", {"box": "100"})
    sender = WebhookSender(settings, outbox)
    assert sender.deliver_due().rejected == 1
    assert sender.deliver_due().rejected == 0
    assert len(receiver.received) == 1          # not tried again, and a redirect not followed
    [(name, reason)] = outbox.rejected()
    assert event.id in name and f"HTTP {status}" in reason
    assert json.loads((tmp_path / "outbox" / "rejected" / name).read_text())["event"]["id"] == event.id
    assert outbox.counts() == {"pending": 0, "sending": 0, "rejected": 1}


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
def test_a_passing_failure_is_retried_not_rejected(receiver, tmp_path, status):
    receiver.statuses = deque([status])
    settings, outbox = settings_for(receiver.url()), Outbox(tmp_path / "outbox")
    event = emit(settings, outbox, "call.started", {})
    clock = FakeClock()
    sender = WebhookSender(settings, outbox, clock=clock)
    assert sender.deliver_due().retried == 1
    assert sender.deliver_due().delivered == 0     # not due for 5 s
    clock.advance(5)
    assert sender.deliver_due().delivered == 1
    assert receiver.ids() == [event.id, event.id]


def test_retries_back_off_from_five_seconds_to_ten_minutes_and_wait_as_long_as_retry_after_asks(receiver, tmp_path):
    receiver.status = 503
    settings, outbox = settings_for(receiver.url()), Outbox(tmp_path / "outbox")
    emit(settings, outbox, "call.started", {})
    clock = FakeClock()
    sender = WebhookSender(settings, outbox, clock=clock)
    waits = []
    for _ in range(10):
        sender.deliver_due()
        [entry] = outbox.due(clock.now + 10**6)
        waits.append(round(entry.next_at - clock.now))
        clock.now = entry.next_at
    assert waits == [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]
    assert entry.attempts == 10 and "HTTP 503" in entry.last_error
    receiver.answer_headers = {"Retry-After": "1800"}
    sender.deliver_due()
    assert round(outbox.due(clock.now + 10**6)[0].next_at - clock.now) == 1800


def test_a_slow_receiver_times_out_and_is_tried_again(receiver, tmp_path):
    receiver.delay = 1.0
    settings, outbox = settings_for(receiver.url(), timeout=0.3), Outbox(tmp_path / "outbox")
    event = emit(settings, outbox, "call.started", {})
    clock = FakeClock()
    sender = WebhookSender(settings, outbox, clock=clock)
    assert sender.deliver_due().retried == 1
    assert "timed out" in outbox.due(clock.now + 60)[0].last_error
    receiver.delay = 0
    clock.advance(5)
    assert sender.deliver_due().delivered == 1
    # The receiver did get the first request (it answered too late): at least once, same id.
    assert receiver.ids() == [event.id, event.id]


def test_an_event_not_delivered_within_max_age_is_rejected_with_its_last_error(tmp_path):
    port = unused_port()
    settings, outbox = settings_for(f"http://127.0.0.1:{port}/hook"), Outbox(tmp_path / "outbox")
    event = emit(settings, outbox, "call.transferred", {"to": "sales"})
    clock = FakeClock()
    sender = WebhookSender(settings, outbox, clock=clock)
    assert sender.deliver_due().retried == 1
    receiver = Receiver(port=port)  # back, but too late
    try:
        clock.now = event.created + 24 * 3600 + 1
        assert sender.deliver_due().rejected == 1
        assert receiver.received == []
    finally:
        receiver.stop()
    [(name, reason)] = outbox.rejected()
    assert event.id in name and "24 hours" in reason and "refused" in reason.lower()


def test_an_entry_for_a_url_no_longer_configured_is_rejected_not_sent(receiver, tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    emit(settings_for(receiver.url("/old")), outbox, "call.started", {})
    assert WebhookSender(Webhooks(), outbox).deliver_due() == DeliveryReport()   # switched off: it waits
    report = WebhookSender(settings_for(receiver.url("/new")), outbox).deliver_due()
    assert report.rejected == 1 and receiver.received == []
    assert "not in [webhooks] urls" in outbox.rejected()[0][1]


# -- several processes ---------------------------------------------------------------------------------

SENDER_PROCESS = """
import sys, time
from voiceassist.events.outbox import Outbox
from voiceassist.events.webhooks import Webhooks, WebhookSender
outbox = Outbox(sys.argv[1])
sender = WebhookSender(Webhooks(urls=tuple(sys.argv[3:]), secret=sys.argv[2]), outbox)
print("ready", flush=True)
sys.stdin.readline()
delivered, deadline = 0, time.monotonic() + 15
while time.monotonic() < deadline and sum(outbox.counts()[f] for f in ("pending", "sending")):
    delivered += sender.deliver_due(5).delivered
print(delivered, flush=True)
"""


def test_senders_in_several_processes_and_threads_never_send_an_entry_twice(receiver, tmp_path):
    urls = (receiver.url("/a"), receiver.url("/b"))
    settings, outbox = settings_for(*urls), Outbox(tmp_path / "outbox")
    events = [emit(settings, outbox, "turn.completed", {"n": n}) for n in range(100)]
    processes = [subprocess.Popen([sys.executable, "-c", SENDER_PROCESS, str(outbox.directory), SECRET, *urls],
                                  cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    delivered_by = []

    def send_until_empty() -> None:
        sender, delivered = WebhookSender(settings, outbox), 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and outbox.counts()["pending"] + outbox.counts()["sending"]:
            delivered += sender.deliver_due(5).delivered
        delivered_by.append(delivered)

    threads = [threading.Thread(target=send_until_empty) for _ in range(3)]
    for process in processes:       # all start together
        process.stdin.write("go\n")
        process.stdin.flush()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0
        delivered_by.append(int(output))
    expected = [event.id for event in events]
    # Each (event, receiver) exactly once, and each receiver in creation order.
    assert receiver.ids("/a") == expected and receiver.ids("/b") == expected
    assert sum(delivered_by) == 200
    print("delivered by each of 3 threads and 2 processes:", delivered_by)
    assert outbox.counts() == {"pending": 0, "sending": 0, "rejected": 0}


def test_a_claim_left_by_a_process_that_died_is_sent_after_it_goes_stale(receiver, tmp_path):
    settings, outbox = settings_for(receiver.url()), Outbox(tmp_path / "outbox")
    event = emit(settings, outbox, "call.started", {})
    assert outbox.claim(outbox.due(time.time())[0]) is not None    # ... and the process dies
    sender = WebhookSender(settings, outbox)
    assert sender.deliver_due().delivered == 0                         # maybe still being sent
    assert outbox.recover_stale(time.time() + STALE_CLAIM_SECONDS + 1) == 1
    assert sender.deliver_due().delivered == 1
    assert receiver.ids() == [event.id]


# -- the caller never waits ---------------------------------------------------------------------------

@pytest.mark.parametrize("down", ["refusing", "not answering"])
def test_emit_returns_within_milliseconds_while_the_receiver_is_down(tmp_path, down):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if down == "not answering":
            listener.listen(64)   # connections are made but never answered: each attempt times out
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        if down == "refusing":
            listener.close()
        settings, outbox = settings_for(url, timeout=1.0), Outbox(tmp_path / "outbox")
        sender = WebhookSender(settings, outbox, first_retry=0.05, poll_interval=0.05)
        sender.start()
        try:
            durations = []
            for n in range(30):
                started = time.perf_counter()
                assert emit(settings, outbox, "turn.completed", {"n": n, "reply": "x" * 500}) is not None
                durations.append(time.perf_counter() - started)
                time.sleep(0.01)
        finally:
            sender.stop()
    print(f"emit with the receiver {down}: median {statistics.median(durations) * 1000:.2f} ms, "
          f"max {max(durations) * 1000:.2f} ms")
    assert max(durations) < 0.050
    assert outbox.counts()["pending"] + outbox.counts()["sending"] == 30


def test_emit_never_raises_when_the_outbox_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert emit(settings_for("http://127.0.0.1:9/"), Outbox(blocker / "outbox"), "call.started", {}) is None
    assert emit(settings_for("http://127.0.0.1:9/"), Outbox(tmp_path / "o"), "call.started", {"x": object()}) is None


# -- what the asterisk user may plant -------------------------------------------------------------------

def test_a_link_planted_as_an_entry_is_moved_aside_not_followed(receiver, tmp_path):
    settings = settings_for(receiver.url())
    # A valid entry for the configured receiver, outside the outbox: followed, it would be sent.
    elsewhere = Outbox(tmp_path / "elsewhere")
    entry = elsewhere.add(new_event("call.started", {"planted": True}), receiver.url())
    target = tmp_path / "elsewhere" / "pending" / entry.name
    before = target.read_bytes()
    outbox = Outbox(tmp_path / "outbox")
    real = emit(settings, outbox, "call.started", {"planted": False})
    (tmp_path / "outbox" / "pending" / entry.name).symlink_to(target)
    report = WebhookSender(settings, outbox).deliver_due()
    assert report.delivered == 1 and receiver.ids() == [real.id]
    [(name, reason)] = outbox.rejected()
    assert name == entry.name and "symbolic link" in reason
    assert (tmp_path / "outbox" / "rejected" / name).is_symlink()     # moved itself, target untouched
    assert target.read_bytes() == before


def test_links_planted_as_outbox_folders_are_refused_not_written_through(tmp_path):
    settings = settings_for("http://127.0.0.1:9/")
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "pending").symlink_to(victim)
    assert emit(settings, Outbox(tmp_path / "outbox"), "call.started", {}) is None
    # rejected/ as a link: a damaged entry stays where it is rather than be moved through it.
    (tmp_path / "outbox" / "pending").unlink()
    (tmp_path / "outbox" / "rejected").symlink_to(victim)
    outbox = Outbox(tmp_path / "outbox")
    emit(settings, outbox, "call.started", {})
    (tmp_path / "outbox" / "pending" / "garbage").write_text("x")
    WebhookSender(settings, outbox).deliver_due()
    assert list(victim.iterdir()) == []
    assert (tmp_path / "outbox" / "pending" / "garbage").exists()


def test_corrupt_entries_go_to_rejected_with_the_reason_and_the_rest_is_delivered(receiver, tmp_path):
    settings, outbox = settings_for(receiver.url()), Outbox(tmp_path / "outbox")
    real = emit(settings, outbox, "call.ended", {})
    pending = tmp_path / "outbox" / "pending"
    key = next(pending.iterdir()).name.split("-")[2].removesuffix(".json")
    # Named to sort first and for the same receiver: they must not hold the real one back.
    (pending / f"{1:016d}-aaaa-{key}.json").write_text("{not json")
    (pending / f"{2:016d}-bbbb-{key}.json").write_text(json.dumps({"format": 1, "destination": receiver.url()}))
    (pending / f"{3:016d}-cccc-{key}.json").write_bytes(b"\xff\xfe")
    os.mkfifo(pending / f"{4:016d}-dddd-{key}.json")
    (pending / f"{5:016d}-eeee-{key}.json").mkdir()
    (pending / "notes.txt").write_text("someone's file")
    report = WebhookSender(settings, outbox).deliver_due()
    assert report.delivered == 1 and receiver.ids() == [real.id]
    reasons = dict(outbox.rejected())
    assert set(reasons) == {f"{1:016d}-aaaa-{key}.json", f"{2:016d}-bbbb-{key}.json", f"{3:016d}-cccc-{key}.json",
                            f"{4:016d}-dddd-{key}.json", f"{5:016d}-eeee-{key}.json", "notes.txt"}
    assert "not a valid outbox entry" in reasons[f"{1:016d}-aaaa-{key}.json"]
    assert "special file" in reasons[f"{4:016d}-dddd-{key}.json"]
    assert "directory" in reasons[f"{5:016d}-eeee-{key}.json"]
    assert "not the name of an outbox entry" in reasons["notes.txt"]
    assert outbox.counts() == {"pending": 0, "sending": 0, "rejected": 6}


# -- what callers say ---------------------------------------------------------------------------------

def test_hostile_text_in_event_data_arrives_intact_as_json(receiver, tmp_path):
    settings, outbox = settings_for(receiver.url()), Outbox(tmp_path / "outbox")
    transcript = 'hello\r\nX-Injected: yes\r\n\r\n"quoted" \\ back\x00slash </script> ü 中文 😀'
    data = {"transcript": transcript, "caller_id": "\udcff\udcfebad bytes", "pair": "\ud83d\ude00",
            "nested": {"key\nwith newline": ["a\"b", 1, None, 2.5]}}
    event = emit(settings, outbox, "turn.completed", data)
    WebhookSender(settings, outbox).deliver_due()
    [request] = receiver.received
    request.body.decode("utf-8", "strict")
    assert request.event["data"] == {"transcript": transcript, "caller_id": "\ufffd\ufffdbad bytes", "pair": "😀",
                                     "nested": {"key\nwith newline": ["a\"b", 1, None, 2.5]}}
    assert "X-Injected" not in request.headers and request.path == "/hook"
    assert request.headers["X-Voiceassist-Event-Id"] == event.id
    assert verify(SECRET, request.headers["X-Voiceassist-Signature"], request.body, now=time.time())
