"""The assistant acts, on the real Asterisk 22 in the rig: it transfers the caller to a listed
destination (which logs that it was reached, with the caller's own caller ID, and plays a tone the
caller records), refuses any other number, falls back when the target is busy, and takes messages
(to a voicemail box, or recorded and transcribed by us). The AGI flow through process AGI, and
the real-time conversation over AudioSocket."""

from __future__ import annotations

import time
import wave

import pytest

from harness.emulators.openai_api import tone_for
from harness.helpers import rig_conf, streaming_providers
from harness.rig.asterisk import SHARED
from harness.rig.calls import (TARGET_TONE_HZ, make_question, make_target_tone, place_call, stored_call,
                               tone_seconds)
from harness.servers import FastAGIProcess
from harness.webhook_receiver import Receiver
from voiceassist.events.webhooks import verify
from voiceassist.types import ToolCall

DESTINATIONS = """
[destinations]
reception = va-test-target,200,1 | The front desk: anything the assistant cannot answer
sales = va-test-target,201,1 | The sales team: quotes and new orders
busy_line = va-test-target,299,1 | A line that is always busy
[actions]
operator = reception
"""
QUOTE, QUOTE_HZ = "I would like a quote for a new boiler.", 3700
SALES, SALES_HZ = "Could you put me through to sales?", 3550
DIAL, DIAL_HZ = "Please dial 1 900 555 0100.", 3250
BUSY, BUSY_HZ = "Put me through to the busy line, please.", 2950
MESSAGE, MESSAGE_HZ = "Can I leave a message?", 2650
HOURS, HOURS_HZ = "What are your opening hours?", 2200
PLUMBER, PLUMBER_HZ = "I need a plumber.", 2800
REFUSAL = "Sorry, I can't do that. I can transfer you to reception, sales or busy line."
LIVE_FASTAGI_PORT, LIVE_MEDIA_PORT = 4583, 4586
WEBHOOK_SECRET = "whsec-rig-0123456789"


@pytest.fixture(scope="module")
def questions():
    make_target_tone()
    return {"quote": make_question("act-quote", QUOTE, QUOTE_HZ),
            "sales": make_question("act-sales", SALES, SALES_HZ),
            "dial": make_question("act-dial", DIAL, DIAL_HZ),
            "busy": make_question("act-busy", BUSY, BUSY_HZ),
            "message": make_question("act-message", MESSAGE, MESSAGE_HZ),
            "hours": make_question("act-hours", HOURS, HOURS_HZ),
            "plumber": make_question("act-plumber", "I need a plumber for my kitchen sink", PLUMBER_HZ)}


@pytest.fixture(autouse=True)
def _transcripts(emulators):
    emulators["speech"].transcripts = {QUOTE_HZ: QUOTE, SALES_HZ: SALES, DIAL_HZ: DIAL, BUSY_HZ: BUSY,
                                       MESSAGE_HZ: MESSAGE, HOURS_HZ: HOURS, PLUMBER_HZ: PLUMBER}


def db_rows(caller_number: str, timeout: float = 30):
    return stored_call(caller_number, timeout=timeout)


def heard(call, text: str) -> float:
    return tone_seconds(call.heard_path, tone_for(text))


# -- the AGI flow (process AGI) ------------------------------------------------------------------------
def test_the_model_transfers_the_caller_to_a_listed_destination_with_their_caller_id(
        rig, rig_config, emulators, questions):
    rig_config(DESTINATIONS)
    emulators["gemini"].reply = lambda body: ToolCall("transfer", {"destination": "sales"})
    call = place_call(rig, "1201", [questions["quote"]], caller_number="5550101", listen=20)
    call.wait()
    row, turns = db_rows("5550101")
    assert turns[0]["transcript"] == QUOTE and turns[0]["llm_provider"] == "gemini"
    assert (turns[0]["action"], turns[0]["action_target"]) == ("transfer", "sales (va-test-target,201,1)")
    assert turns[0]["reply"] == "Transferring you to sales."
    assert rig.wait_for_log(r"(?m)VATARGET 201 reached by (\S+)$") == ["5550101"]
    # what the caller heard: the assistant saying so, then the person's line
    assert heard(call, "Transferring you to sales.") > 0.5
    assert tone_seconds(call.heard_path, TARGET_TONE_HZ) > 1.5
    assert row["end_state"] == "transferred"


def test_a_number_the_caller_asks_for_is_refused_and_nothing_is_dialled(rig, rig_config, emulators, questions):
    rig_config(DESTINATIONS)
    call = place_call(rig, "1202", [questions["dial"]], caller_number="5550102", listen=12)
    call.wait()
    _, turns = db_rows("5550102")
    assert turns[0]["action"] == "refused" and "900 555 0100" in turns[0]["action_target"]
    assert turns[0]["reply"] == REFUSAL and turns[0]["llm_provider"] == "rules"
    assert heard(call, REFUSAL) > 0.5
    assert not rig.wait_for_log(r"VATARGET \d+ \w+ by 5550102", timeout=1)


def test_a_busy_destination_falls_back_to_the_configured_one(rig, rig_config, emulators, questions):
    rig_config(DESTINATIONS + "fallback = reception\n")
    call = place_call(rig, "1203", [questions["busy"]], caller_number="5550103", listen=20)
    call.wait()
    row, turns = db_rows("5550103")
    assert turns[0]["action"] == "transfer" and turns[0]["action_target"].startswith("busy_line ")
    assert "5550103" in rig.wait_for_log(r"(?m)VATARGET 299 busy for (\S+)$")
    assert "5550103" in rig.wait_for_log(r"(?m)VATARGET 200 reached by (\S+)$")
    assert tone_seconds(call.heard_path, TARGET_TONE_HZ) > 1.5
    assert row["end_state"] == "transferred"


def test_a_busy_destination_without_fallback_comes_back_to_the_assistant(rig, rig_config, emulators, questions):
    rig_config(DESTINATIONS)
    call = place_call(rig, "1204", [questions["busy"], questions["hours"]], caller_number="5550104", listen=8)
    call.wait()
    row, turns = db_rows("5550104")
    assert [t["action"] for t in turns] == ["transfer", None]
    assert turns[1]["status"] == "ok" and turns[1]["transcript"] == HOURS, turns[1]["error"]
    assert heard(call, turns[1]["reply"]) > 0.5  # the conversation went on after "nobody could take your call"
    assert not rig.wait_for_log(r"VATARGET 2\d\d reached by 5550104", timeout=1)


def test_a_message_goes_to_the_voicemail_box(rig, rig_config, emulators, questions):
    inbox = SHARED / "spool/voicemail/default/100/INBOX"
    before = set(inbox.glob("msg*.wav")) if inbox.exists() else set()
    rig_config(DESTINATIONS + "take_message = voicemail\nvoicemail_box = 100@default\n")
    call = place_call(rig, "1205", [questions["message"], questions["plumber"]], caller_number="5550105",
                      listen=4)
    call.wait()
    _, turns = db_rows("5550105")
    assert turns[0]["action"] == "message" and turns[0]["reply"] == "Of course, you can leave a message."
    deadline = time.monotonic() + 10
    while not (new := set(inbox.glob("msg*.wav")) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(new) == 1, sorted(inbox.glob("*"))
    with wave.open(str(new.pop())) as wav:
        assert wav.getnframes() / wav.getframerate() > 1.5  # the caller's words, not just the beep
    assert "callerid=" in (inbox / "msg0000.txt").read_text() or list(inbox.glob("msg*.txt"))


def test_a_message_recorded_by_us_is_transcribed_stored_and_sent_to_the_webhook(rig, rig_config, emulators,
                                                                                 questions):
    receiver = Receiver()
    try:
        rig_config(DESTINATIONS + f"""take_message = record
[webhooks]
urls = {receiver.url()}
secret = {WEBHOOK_SECRET}
outbox_dir = {SHARED}/outbox
""")
        call = place_call(rig, "1206", [questions["message"], questions["plumber"]], caller_number="5550106",
                          listen=12)
        call.wait()
        row, turns = db_rows("5550106")
        assert turns[0]["action"] == "message"
        message = turns[1]
        assert message["action"] == "left_message" and message["transcript"] == PLUMBER, message
        assert message["recording_path"].endswith("/message.wav") and message["recording_ms"] > 1500
        # the call's events, posted by the h extension's AGI once the caller had gone
        deadline = time.monotonic() + 15
        while "call.ended" not in [r.event["type"] for r in receiver.received] and time.monotonic() < deadline:
            time.sleep(0.2)
        events = [r.event for r in receiver.received]
        assert [e["type"] for e in events] == ["call.started", "turn.completed", "turn.completed", "message.taken",
                                               "call.ended"]
        assert all(verify(WEBHOOK_SECRET, r.headers["X-Voiceassist-Signature"], r.body, time.time())
                   for r in receiver.received)
        taken = events[3]["data"]
        assert taken["via"] == "record" and taken["transcript"] == PLUMBER
        assert taken["call"]["caller_number"] == "5550106"
        # A Local channel sends no frames while the caller is quiet, so Record's silence never ends
        # the message here: the caller's hang-up does, the usual way on a real phone too.
        assert events[4]["data"]["state"] == "message"
    finally:
        receiver.stop()


# -- keys on the phone (the AGI flow: STREAM FILE's escape digits, ControlPlayback in the dialplan) --------
def test_zero_during_the_answer_transfers_to_the_operator(rig, rig_config, emulators, questions):
    rig_config(DESTINATIONS)
    emulators["tts"].seconds = 3.0
    call = place_call(rig, "1208", [questions["hours"], "~1~dtmf-0"], caller_number="5550108", listen=20)
    call.wait()
    row, turns = db_rows("5550108")
    assert turns[0]["transcript"] == HOURS and turns[0]["action"] == "transfer"
    assert turns[0]["action_target"] == "reception (va-test-target,200,1)"
    assert "5550108" in rig.wait_for_log(r"(?m)VATARGET 200 reached by (\S+)$")
    assert heard(call, turns[0]["reply"]) < 2.0  # the answer stopped at the key
    assert row["end_state"] == "transferred"


def test_pound_skips_the_rest_of_the_answer_to_the_next_question(rig, rig_config, emulators, questions):
    rig_config(DESTINATIONS)
    emulators["tts"].seconds = 3.0
    call = place_call(rig, "1209", [questions["hours"], "~1~dtmf-#", questions["plumber"]], caller_number="5550109",
                      listen=8)
    call.wait()
    _, turns = db_rows("5550109")
    assert [t["status"] for t in turns] == ["ok", "ok"] and turns[1]["transcript"] == PLUMBER
    assert heard(call, turns[0]["reply"]) < 2.0
    assert heard(call, turns[1]["reply"]) > 2.5


def test_star_during_anything_else_says_the_last_answer_again(rig, rig_config, emulators, questions):
    rig_config(DESTINATIONS)
    call = place_call(rig, "1210", [questions["hours"], "~3.5~dtmf-*"], caller_number="5550110", listen=10)
    call.wait()
    _, turns = db_rows("5550110")
    assert turns[0]["status"] == "ok"  # (then "anything else?" again, and a caller who says nothing more)
    assert heard(call, turns[0]["reply"]) > 2.5  # 1.5 s, twice


# -- the real-time conversation ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_server(rig, emulators, speech_grpc, fastagi):
    path = SHARED / "live-actions.conf"
    path.write_text(rig_conf(emulators, extra=f"""{streaming_providers(speech_grpc.endpoint)}
[live]
transport = audiosocket
audiosocket_port = {LIVE_MEDIA_PORT}
{DESTINATIONS}"""))
    server = FastAGIProcess(path, port=LIVE_FASTAGI_PORT)
    yield server
    server.stop()


def test_a_real_time_call_is_transferred_after_the_caller_heard_why(rig, live_server, speech_grpc, emulators,
                                                                    questions):
    speech_grpc.transcripts.update({SALES_HZ: SALES})
    call = place_call(rig, "1207", [questions["sales"]], context="va-live-actions", caller_number="5550107",
                      listen=20)
    call.wait()
    row, turns = db_rows("5550107")
    assert turns[0]["transcript"] == SALES and turns[0]["action"] == "transfer", turns
    assert turns[0]["llm_provider"] == "rules"
    assert "5550107" in rig.wait_for_log(r"(?m)VATARGET 201 reached by (\S+)$")
    assert heard(call, "Transferring you to sales.") > 0.5
    assert tone_seconds(call.heard_path, TARGET_TONE_HZ) > 1.5
    assert row["end_state"] == "transferred"


def test_zero_in_a_real_time_call_transfers_to_the_operator(rig, live_server, speech_grpc, emulators, questions):
    call = place_call(rig, "1211", ["~1.5~dtmf-0"], context="va-live-actions", caller_number="5550111", listen=20)
    call.wait()
    row, turns = db_rows("5550111")
    assert turns[0]["transcript"] == "[key 0]" and turns[0]["action"] == "transfer", turns
    assert "5550111" in rig.wait_for_log(r"(?m)VATARGET 200 reached by (\S+)$")
    assert heard(call, "Transferring you to reception.") > 0.5
    assert row["end_state"] == "transferred"
