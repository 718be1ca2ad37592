"""Calls to 8008 on the real Asterisk 22 in the rig, with the real SDKs talking to the emulators."""

from __future__ import annotations

import base64
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.emulators.openai_tts import tone_for
from tests.rig.asterisk import SHARED
from tests.rig.calls import make_question, place_call, tone_seconds

OPENING_HOURS = "What are your opening hours?"
SUNDAY = "Are you open on Sunday?"


@pytest.fixture(scope="module")
def questions():
    return {
        "hours": make_question("hours", "What are your opening hours?", 2200),
        "sunday": make_question("sunday", "Are you open on Sunday?", 2500),
        "plumber": make_question("plumber", "I need a plumber for my kitchen sink", 2800),
        "address": make_question("address", "Where is your office?", 3100),
        "price": make_question("price", "How much does a visit cost?", 3400),
    }


@pytest.fixture(autouse=True)
def _transcripts(emulators):
    emulators["speech"].transcripts = {2200: OPENING_HOURS, 2500: SUNDAY, 2800: "I need a plumber.",
                                       3100: "Where is your office?", 3400: "How much does a visit cost?"}


def db_rows(caller_number: str, wait_for_end: bool = True, timeout: float = 20):
    """The call and its turns for a caller number, once the call row has ended_at (h extension ran)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(SHARED / "voiceassist.db") as db:
            db.row_factory = sqlite3.Row
            call = db.execute("SELECT * FROM voiceassist_calls WHERE caller_number = ?", (caller_number,)).fetchone()
            turns = []
            if call is not None:
                turns = [dict(r) for r in db.execute(
                    "SELECT * FROM voiceassist_turns WHERE call_id = ? ORDER BY turn_number", (call["id"],))]
        if call is not None and (call["ended_at"] or not wait_for_end):
            return dict(call), turns
        if time.monotonic() > deadline:
            raise AssertionError(f"no ended call for caller {caller_number}: {call and dict(call)}")
        time.sleep(0.2)


def answer_heard(call, reply: str) -> float:
    return tone_seconds(call.heard_path, tone_for(reply))


@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_call_to_8008_is_answered_stored_and_played(rig, fastagi, emulators, questions, context):
    key = "1001" if context == "voiceassist" else "1002"
    call = place_call(rig, key, [questions["hours"]], caller_name="Alice Example")
    call.wait()
    row, turns = db_rows(key)
    assert row["caller_name"] == "Alice Example"
    assert re.fullmatch(r"\d+\.\d+", row["uniqueid"]) and row["extension"] == "8008"
    assert row["channel"].startswith(f"Local/{key}@va-test-entry-")
    assert turns[0]["status"] == "ok", turns[0]["error"]
    assert turns[0]["transcript"] == OPENING_HOURS
    reply = f"Answer 1: you asked, {OPENING_HOURS}"
    assert turns[0]["reply"] == reply
    assert turns[0]["stt_provider"] == "google_speech" and turns[0]["tts_provider"] == "openai_tts"
    assert Path(turns[0]["answer_path"]).exists()
    for stage in ("stt_ms", "llm_ms", "tts_ms", "convert_ms", "total_ms", "recording_ms"):
        assert turns[0][stage] is not None and turns[0][stage] >= 0, stage
    assert 1500 < turns[0]["recording_ms"] < 15000
    # The caller actually heard the answer (the TTS emulator's tone for this reply), all of it.
    assert answer_heard(call, reply) >= 1.2
    # The STT request carried this call's recording at 8 kHz.
    sent = emulators["speech"].requests[-1].json()
    assert sent["config"]["sampleRateHertz"] == 8000
    # Tagged VERBOSE lines reached Asterisk's log with the call's uniqueid.
    log = rig.full_log()
    for tag in ("STT", "LLM", "TTS", "DB"):
        assert f"[{tag}] {row['uniqueid']}" in log, tag
