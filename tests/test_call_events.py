"""What calls tell the admin's systems, end to end without Asterisk: a FastAGI server (a byte-level
fake Asterisk places the turns and the h extension's hang-up) queues call.started, turn.completed,
call.transferred and call.ended; the webhook sender posts them, signed, to a real receiver on
loopback; the call's summary is written by the model (the Gemini emulator) once the caller has
gone; and a caller's earlier calls reach the model's instructions when [memory] is on."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import statistics
import threading
import time

import pytest

from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
from harness.helpers import config_for, voiceassist_log
from harness.servers import in_process_fastagi
from harness.webhook_receiver import Receiver
from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant
from voiceassist.call.summary import remembers
from voiceassist.events.webhooks import WebhookSender, verify
from voiceassist.types import ToolCall

SECRET = "whsec-calls-0123456789"
SUMMARY = "Alice asked about opening hours and was told eight to six."


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def start_server(assistant: Assistant) -> FastAGIServer:
    instance = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=4, read_timeout=10)
    threading.Thread(target=instance.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return instance


@pytest.fixture
def assistant(emulators, tmp_path, receiver):
    return Assistant(config_for(emulators, tmp_path, extra=f"""
[general]
call_summary = yes
[webhooks]
urls = {receiver.url()}
secret = {SECRET}
outbox_dir = {tmp_path}/outbox
[memory]
enabled = yes
[destinations]
sales = ext-queues,400,1 | The sales team
"""))


@pytest.fixture
def server(assistant):
    instance = start_server(assistant)
    yield instance
    instance.shutdown()
    instance.server_close()


def turn(server, tmp_path, uniqueid: str, number: int = 1, caller: str = "5550100") -> dict[str, str]:
    wav = call_recording(tmp_path / "spool/voiceassist", uniqueid, number)
    client = FakeAsterisk(server.server_address[1], fastagi_env(
        "voiceassist", uniqueid, ["turn", str(wav), "NOISE", str(number), str(int(time.time())), "8008", uniqueid],
        callerid=caller))
    client.run()
    return client.variables()


def hang_up(server, uniqueid: str, state: str, turns: int, caller: str = "5550100", target: tuple[str, str] = ("", "")):
    client = FakeAsterisk(server.server_address[1], fastagi_env(
        "voiceassist", uniqueid, ["hangup", state, "", str(turns), "8008", uniqueid, *target], callerid=caller))
    client.run()


def delivered(assistant: Assistant, receiver: Receiver) -> list[dict]:
    WebhookSender(assistant.config.webhooks, assistant.outbox()).deliver_due(10)
    for request in receiver.received:
        assert verify(SECRET, request.headers["X-Voiceassist-Signature"], request.body, time.time())
    return [request.event for request in receiver.received]


def test_a_call_tells_its_start_its_turns_and_its_end_with_a_summary(server, assistant, emulators, receiver, tmp_path):
    emulators["speech"].default_transcript = "When are you open?"
    turn(server, tmp_path, "1700000100.1")
    emulators["gemini"].reply = lambda body: SUMMARY  # the summary, asked once the caller has gone
    hang_up(server, "1700000100.1", "done", 1)
    events = delivered(assistant, receiver)
    assert [e["type"] for e in events] == ["call.started", "turn.completed", "call.ended"]
    assert {e["data"]["call"]["uniqueid"] for e in events} == {"1700000100.1"}
    completed = events[1]["data"]["turn"]
    assert completed["transcript"] == "When are you open?" and completed["status"] == "ok"
    assert completed["providers"]["llm"] == "gemini" and completed["timings_ms"]["total"] > 0
    assert events[2]["data"]["summary"] == SUMMARY and events[2]["data"]["state"] == "done"
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        assert db.execute("SELECT summary FROM voiceassist_calls").fetchone()[0] == SUMMARY
    summary_request = json.loads(emulators["gemini"].requests[-1].body)
    assert "When are you open?" in summary_request["contents"][-1]["parts"][0]["text"]


def test_a_transfer_is_told_with_its_destination(server, assistant, emulators, receiver, tmp_path):
    emulators["gemini"].reply = lambda body: ToolCall("transfer", {"destination": "sales"})
    turn(server, tmp_path, "1700000100.2")
    hang_up(server, "1700000100.2", "transferred", 1, target=("sales", "ext-queues,400,1"))
    events = delivered(assistant, receiver)
    assert [e["type"] for e in events] == ["call.started", "turn.completed", "call.transferred", "call.ended"]
    assert events[1]["data"]["turn"]["action"] == "transfer"
    assert events[2]["data"]["destination"] == "sales" and events[2]["data"]["target"] == "ext-queues,400,1"


def test_a_receiver_that_is_down_does_not_slow_the_call(emulators, tmp_path, receiver):
    """The same turn with webhooks off and with them on while the receiver refuses connections."""
    receiver.stop()
    timings = {}
    for name, extra in (("off", ""), ("receiver down", f"[webhooks]\nurls = {receiver.url()}\nsecret = {SECRET}\n"
                                                      f"outbox_dir = {tmp_path}/outbox\n")):
        assistant = Assistant(config_for(emulators, tmp_path / name, extra=extra))
        instance = start_server(assistant)
        try:
            durations = []
            for n in range(5):
                started = time.monotonic()
                turn(instance, tmp_path / name, f"1700000200.{n}")
                durations.append(time.monotonic() - started)
            timings[name] = statistics.median(durations[1:])
        finally:
            instance.shutdown()
            instance.server_close()
    print(f"turn with webhooks off {timings['off'] * 1000:.0f} ms, receiver down {timings['receiver down'] * 1000:.0f} ms")
    assert timings["receiver down"] - timings["off"] < 0.05
    assert len(list((tmp_path / "outbox/pending").iterdir())) == 10  # all kept for later: started + turn, five calls


def test_a_second_call_from_the_same_number_reminds_the_model_of_the_first(server, emulators, receiver, tmp_path):
    emulators["speech"].default_transcript = "My boiler is leaking."
    turn(server, tmp_path, "1700000300.1", caller="5550123")
    emulators["gemini"].reply = lambda body: "The caller's boiler is leaking; a plumber was offered."
    hang_up(server, "1700000300.1", "done", 1, caller="5550123")
    emulators["gemini"].reply = lambda body: "Yes, about your boiler."
    emulators["speech"].default_transcript = "It's me again about the boiler."
    turn(server, tmp_path, "1700000301.1", caller="5550123")
    system = json.loads(emulators["gemini"].requests[-1].body)["systemInstruction"]["parts"][0]["text"]
    assert "EARLIER CALLS FROM THIS CALLER" in system and "boiler is leaking; a plumber was offered" in system
    # another caller, and a withheld number, get nothing of it
    turn(server, tmp_path, "1700000302.1", caller="5550999")
    turn(server, tmp_path, "1700000303.1", caller="anonymous")
    for request in emulators["gemini"].requests[-2:]:
        assert "EARLIER CALLS" not in json.loads(request.body)["systemInstruction"]["parts"][0]["text"]


def test_pruning_old_calls_removes_what_is_remembered(server, assistant, emulators, tmp_path):
    turn(server, tmp_path, "1700000400.1", caller="5550124")
    hang_up(server, "1700000400.1", "done", 1, caller="5550124")
    store = assistant.journal().store()
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    assert store.earlier_calls("5550124", since, "x", 3)
    store.prune(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1))
    assert store.earlier_calls("5550124", since, "x", 3) == []


@pytest.mark.parametrize("number, remembered", [("5550123", True), ("+44 20 7946 0000", True), ("anonymous", False),
                                                ("Anonymous", False), ("", False), ("unknown", False), ("0", False),
                                                ("withheld", False), ("12", False)])
def test_only_a_real_number_identifies_a_caller(number, remembered):
    assert remembers(number) is remembered


def test_the_caller_lookup_gives_the_model_the_businesss_facts_for_every_turn(emulators, tmp_path, receiver):
    receiver.answer_body = json.dumps({"name": "Alice Example", "account": "A-17", "notes": "prefers mornings"}).encode()
    assistant = Assistant(config_for(emulators, tmp_path, extra=f"""
[webhooks]
lookup_url = {receiver.url("/lookup")}
secret = {SECRET}
outbox_dir = {tmp_path}/outbox
"""))
    instance = start_server(assistant)
    try:
        turn(instance, tmp_path, "1700000500.1", 1)
        turn(instance, tmp_path, "1700000500.1", 2)
    finally:
        instance.shutdown()
        instance.server_close()
    (asked,) = receiver.received  # once per call: later turns read what the first got
    assert asked.event["type"] == "call.started" and asked.event["data"]["call"]["uniqueid"] == "1700000500.1"
    assert verify(SECRET, asked.headers["X-Voiceassist-Signature"], asked.body, time.time())
    for request in emulators["gemini"].requests[-2:]:
        system = json.loads(request.body)["systemInstruction"]["parts"][0]["text"]
        assert "ABOUT THE CALLER" in system and "account: A-17" in system and "name: Alice Example" in system


def test_a_slow_caller_lookup_is_not_waited_for(emulators, tmp_path, receiver):
    receiver.answer_body, receiver.delay = b'{"name": "Late"}', 3.0
    assistant = Assistant(config_for(emulators, tmp_path, extra=f"""
[webhooks]
lookup_url = {receiver.url("/lookup")}
lookup_timeout = 0.5
secret = {SECRET}
outbox_dir = {tmp_path}/outbox
"""))
    instance = start_server(assistant)
    try:
        started = time.monotonic()
        variables = turn(instance, tmp_path, "1700000501.1")
        took = time.monotonic() - started
    finally:
        instance.shutdown()
        instance.server_close()
    assert variables["VOICEASSIST_STATUS"] == "ok" and took < 1.5
    assert "ABOUT THE CALLER" not in json.loads(emulators["gemini"].requests[-1].body)["systemInstruction"]["parts"][0]["text"]


# -- e-mail through the local mail server ---------------------------------------------------------------
@pytest.fixture
def smtp():
    from harness.smtp_sink import SmtpSink

    sink = SmtpSink()
    yield sink
    sink.close()


def mail_server(emulators, tmp_path, smtp, send: str) -> FastAGIServer:
    return start_server(Assistant(config_for(emulators, tmp_path, extra=f"""
[general]
call_summary = yes
[actions]
take_message = record
[email]
to = office@example.com, boss@example.com
send = {send}
smtp_host = 127.0.0.1
smtp_port = {smtp.port}
""")))


def test_a_message_the_caller_left_is_mailed_with_its_transcript(emulators, tmp_path, smtp):
    instance = mail_server(emulators, tmp_path, smtp, "messages")
    try:
        emulators["speech"].default_transcript = "Please call me back about the invoice."
        recording = call_recording(tmp_path / "spool/voiceassist", "1700000600.1", 9)
        message = recording.with_name("message.wav")
        recording.rename(message)
        FakeAsterisk(instance.server_address[1], fastagi_env(
            "voiceassist", "1700000600.1", ["message", str(message), "1", "8008", "1700000600.1"],
            callerid="5550100")).run()
        emulators["gemini"].reply = lambda body: "The caller left a message about an invoice."
        hang_up(instance, "1700000600.1", "done", 1)
    finally:
        instance.shutdown()
        instance.server_close()
    (mail,) = smtp.mails
    assert mail.recipients == ["office@example.com", "boss@example.com"]
    assert mail.message["Subject"] == "[voiceassist] Message from Alice <5550100>"
    body = mail.message.get_content()
    assert "Please call me back about the invoice." in body and str(message) in body
    assert "The caller left a message about an invoice." in body


def test_only_calls_with_a_message_are_mailed_unless_all_are_asked_for(emulators, tmp_path, smtp):
    for send, expected in (("messages", 0), ("all", 1)):
        instance = mail_server(emulators, tmp_path / send, smtp, send)
        try:
            emulators["gemini"].reply = lambda body: "Answer."
            turn(instance, tmp_path / send, f"1700000700.{expected}")
            hang_up(instance, f"1700000700.{expected}", "done", 1)
        finally:
            instance.shutdown()
            instance.server_close()
        assert len(smtp.mails) == expected, send
    assert smtp.mails[0].message["Subject"].startswith("[voiceassist] Call from")
    assert "The conversation:" in smtp.mails[0].message.get_content()


def test_a_mail_server_that_is_down_is_logged_and_the_call_end_is_still_stored(emulators, tmp_path, smtp):
    smtp.close()
    instance = mail_server(emulators, tmp_path, smtp, "all")
    try:
        turn(instance, tmp_path, "1700000800.1")
        with voiceassist_log() as log:
            hang_up(instance, "1700000800.1", "done", 1)
    finally:
        instance.shutdown()
        instance.server_close()
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        assert db.execute("SELECT end_state FROM voiceassist_calls").fetchone()[0] == "done"
    assert "[MAIL] 1700000800.1 not sent to office@example.com, boss@example.com" in log()


def test_a_message_left_in_voicemail_is_told(server, assistant, emulators, receiver, tmp_path):
    turn(server, tmp_path, "1700000900.1")
    hang_up(server, "1700000900.1", "message", 1, target=("voicemail", "100@default"))
    events = delivered(assistant, receiver)
    taken = next(e for e in events if e["type"] == "message.taken")
    assert taken["data"]["via"] == "voicemail" and taken["data"]["mailbox"] == "100@default"


def test_a_summary_is_redacted_as_the_turns_are(emulators, tmp_path):
    assistant = Assistant(config_for(emulators, tmp_path, extra="[general]\ncall_summary = yes\n[privacy]\nredact = phone\n"))
    with in_process_fastagi(assistant) as instance:
        turn(instance, tmp_path, "1700001100.1")
        emulators["gemini"].reply = lambda body: "Bob wants a call back on 0171 555 0199 about a leak."
        hang_up(instance, "1700001100.1", "done", 1)
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        summary = db.execute("SELECT summary FROM voiceassist_calls").fetchone()[0]
    assert "555 0199" not in summary and "about a leak" in summary
