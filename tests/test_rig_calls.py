"""Calls to 8008 on the real Asterisk 22 in the rig, with the real SDKs talking to the emulators."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from harness.emulators.openai_api import tone_for
from harness.rig.asterisk import SHARED
from harness.rig.calls import make_question, place_call, stored_call, tone_seconds

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
    return stored_call(caller_number, wait_for_end=wait_for_end, timeout=timeout)


def answer_heard(call, reply: str) -> float:
    return tone_seconds(call.heard_path, tone_for(reply))


@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_call_to_8008_is_answered_stored_and_played(rig, fastagi, emulators, questions, context):
    key = "1001" if context == "voiceassist" else "1002"
    # The design card's end of question (WaitForSilence 2 s); the VAD default has its own test below.
    call = place_call(rig, key, [questions["hours"]], context=context, caller_name="Alice Example",
                      ending="silence")
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
    # End of speech (the dialplan's silence detection, 2 s, placed it) to the first answer audio.
    assert 2000 < turns[0]["speech_to_audio_ms"] < 20000
    assert turns[0]["speech_to_audio_ms"] > turns[0]["first_audio_ms"] + 2000
    assert row["end_state"] in ("done", "answering") and row["ended_at"] is not None
    # The caller actually heard the answer (the TTS emulator's tone for this reply), all of it.
    assert answer_heard(call, reply) >= 1.2
    # The right path served the call: a thread of the FastAGI server, or a process per turn.
    log = (SHARED / "voiceassist.log").read_text()
    # (the STT line: it is logged by the call's own thread; a pipelined answer's LLM line by its worker)
    threads = re.findall(rf"\d+ (\S+) INFO voiceassist: \[STT\] {re.escape(row['uniqueid'])} ", log)
    assert threads and (threads[0] != "MainThread") == (context == "voiceassist-fastagi"), threads
    # The STT request carried this call's recording at 8 kHz.
    sent = emulators["speech"].requests[-1].json()
    assert sent["config"]["sampleRateHertz"] == 8000
    # Tagged VERBOSE lines reached Asterisk's log with the call's uniqueid.
    for tag in ("STT", "LLM", "TTS", "DB"):
        assert rig.wait_for_log(re.escape(f"[{tag}] {row['uniqueid']}")), tag


def turn_log_lines(rig, uniqueid: str) -> list[tuple[str, str, str, str]]:
    """(turn, status, reply-as-Asterisk-holds-it, INJECTED) from the admin hook's Log() lines."""
    found = []
    pattern = rf"after-turn: VATURN {re.escape(uniqueid)} (\d+) (\S*) (\S*) INJECTED=(\S*)"
    for turn, status, reply64, injected in rig.wait_for_log(pattern):
        reply = base64.b64decode(reply64).decode("utf-8", "replace") if reply64 else ""
        found.append((turn, status, reply, injected))
    return found


def playbacks(rig, key: str, expected: str) -> list[str]:
    """Sounds played to the 8008 side of test call ``key``, once ``expected`` shows up (or 10 s)."""
    pattern = rf"<Local/{key}@va-test-entry-[0-9a-f]+;2> Playing '([^']*{re.escape(expected)}[^']*)'"
    rig.wait_for_log(pattern)
    return re.findall(rf"<Local/{key}@va-test-entry-[0-9a-f]+;2> Playing '([^']+)'", rig.full_log())


def test_two_question_call_keeps_history(rig, fastagi, emulators, questions):
    call = place_call(rig, "1010", [questions["hours"], questions["sunday"]])
    call.wait()
    row, turns = db_rows("1010")
    assert [t["status"] for t in turns[:2]] == ["ok", "ok"], [t["error"] for t in turns]
    assert turns[1]["transcript"] == SUNDAY
    assert turns[1]["reply"] == f"Answer 2: you asked, {SUNDAY}"
    second = [r.json() for r in emulators["gemini"].requests][1]
    assert [c["role"] for c in second["contents"]] == ["user", "model", "user"]
    assert second["contents"][0]["parts"][0]["text"] == OPENING_HOURS
    assert second["contents"][1]["parts"][0]["text"] == f"Answer 1: you asked, {OPENING_HOURS}"
    assert answer_heard(call, turns[0]["reply"]) >= 1.2 and answer_heard(call, turns[1]["reply"]) >= 1.2
    # The caller said nothing after the second "anything else?": goodbye, and the call ended.
    assert turns[2]["status"] == "no_speech" and len(turns) == 3
    assert row["ended_at"]


@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_voice_activity_detection_ends_the_question_sooner(rig, fastagi, emulators, questions, context):
    """VA_LISTEN=vad: the EAGI listener records two questions (one per turn) and ends each about
    700 ms after the caller's last word instead of the 2 s WaitForSilence waits."""
    key = "1101" if context == "voiceassist" else "1102"
    call = place_call(rig, key, [questions["hours"], questions["sunday"]], context=context, ending="vad")
    call.wait()
    row, turns = db_rows(key)
    assert [t["status"] for t in turns[:2]] == ["ok", "ok"], [t["error"] for t in turns]
    assert [t["transcript"] for t in turns[:2]] == [OPENING_HOURS, SUNDAY]
    for turn in turns[:2]:
        assert answer_heard(call, turn["reply"]) >= 1.2
        # The whole question was recorded (marker tone + speech, about 2 s), not cut short.
        assert 1500 < turn["recording_ms"] < 6000, turn["recording_ms"]
        waited = turn["speech_to_audio_ms"] - turn["first_audio_ms"]
        assert 600 <= waited < 1500, waited  # 2000+ with WaitForSilence (see the test above)
    own_lines = [line for line in rig.full_log().splitlines() if f'"Local/{key}@va-test-entry-' in line
                 and ';2"' in line]  # the 8008 side's applications
    assert [line for line in own_lines if "EAGI(" in line]
    assert not [line for line in own_lines if "WaitForSilence(" in line]
    turn_agis = [line for line in own_lines if 'AGI("' in line and ",turn," in line]
    if context == "voiceassist":
        # Process AGI: the listener prepared the providers while the caller spoke and answered itself.
        assert not turn_agis, turn_agis
    else:
        assert len(turn_agis) >= 2
    assert turns[2]["status"] == "no_speech"


def test_five_simultaneous_calls_do_not_clash(rig, fastagi, emulators, questions):
    names = ["hours", "sunday", "plumber", "address", "price"]
    transcripts = {2200: OPENING_HOURS, 2500: SUNDAY, 2800: "I need a plumber.", 3100: "Where is your office?",
                   3400: "How much does a visit cost?"}
    tones = [440.0, 660.0, 880.0, 1320.0, 1760.0]
    for tone, text in zip(tones, transcripts.values()):
        emulators["tts"].tones[f"Answer 1: you asked, {text}"] = tone
    calls = []
    for index, name in enumerate(names):
        context = "voiceassist-fastagi" if index % 2 else "voiceassist"  # both paths at once
        calls.append(place_call(rig, f"20{index}0", [questions[name]], context=context, dial=False))
    for call in calls:
        call.dial()
    for call in calls:
        call.wait(timeout=180)
    uniqueids = set()
    for index, (call, text, tone) in enumerate(zip(calls, transcripts.values(), tones)):
        row, turns = db_rows(f"20{index}0")
        uniqueids.add(row["uniqueid"])
        assert turns[0]["status"] == "ok", turns[0]["error"]
        assert turns[0]["transcript"] == text
        assert row["uniqueid"].replace(".", "_") in turns[0]["answer_path"] or row["uniqueid"] in turns[0]["answer_path"]
        assert tone_seconds(call.heard_path, tone) >= 1.2, f"caller {index} did not hear its own answer"
        for other in set(tones) - {tone}:
            assert tone_seconds(call.heard_path, other) < 0.3, f"caller {index} heard another caller's answer"
    assert len(uniqueids) == 5


@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_caller_hanging_up_during_the_turn_is_stored_cleanly(rig, fastagi, emulators, questions, context):
    key = "3001" if context == "voiceassist" else "3002"
    emulators["gemini"].latency = 6.0  # the caller gives up while the model is thinking
    call = place_call(rig, key, [questions["hours"]], context=context, listen=4)
    call.wait()
    row, turns = db_rows(key)
    assert turns[0]["status"] == "hangup", turns[0]
    assert "hung up while the assistant was thinking" in turns[0]["error"]
    assert turns[0]["transcript"] == OPENING_HOURS
    assert turns[0]["answer_path"] is None
    # What the caller experienced: nothing was played, nothing was spoken for nobody.
    assert turns[0]["first_audio_ms"] is None and turns[0]["speech_to_audio_ms"] is None
    assert emulators["tts"].requests == []
    assert row["end_state"] == "thinking" and len(turns) == 1
    assert not list((SHARED / "spool/voiceassist" / row["uniqueid"]).glob("answer-*"))
    assert "Traceback" not in (SHARED / "voiceassist.log").read_text()


@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_a_caller_who_hangs_up_at_anything_else_had_a_good_one_question_call(rig, fastagi, emulators, questions,
                                                                              context):
    """Answered, then gone at "anything else?": one turn, no phantom "hung up while asking" turn,
    and `voiceassist calls` lists the call as answered."""
    key = "3011" if context == "voiceassist" else "3012"
    call = place_call(rig, key, [questions["hours"]], context=context, listen=8, grace=6)
    call.wait()
    row, turns = db_rows(key)
    assert [(t["turn_number"], t["status"]) for t in turns] == [(1, "ok")], turns
    assert row["end_state"] == "recording"
    assert not list((SHARED / "spool/voiceassist" / row["uniqueid"]).glob("question-2.wav"))
    from voiceassist.admin.reports import call_outcome
    from voiceassist.storage.store import Store

    store = Store(f"sqlite:///{SHARED}/voiceassist.db")
    try:
        listed = next(c for c in store.recent_calls(limit=50) if c["uniqueid"] == row["uniqueid"])
    finally:
        store.engine.dispose()
    assert (listed["turns"], listed["answered"], call_outcome(listed)) == (1, 1, "ok")


def test_caller_hanging_up_while_asking_is_stored(rig, fastagi, emulators, questions):
    call = place_call(rig, "3003", [questions["hours"]], listen=0)
    call.wait()
    row, turns = db_rows("3003")
    assert [(t["turn_number"], t["status"], t["error"]) for t in turns] == [(1, "hangup", "caller hung up while asking")]
    assert row["ended_at"]
    assert emulators["speech"].requests == []


def test_silent_caller_hears_didnt_catch_then_goodbye(rig, fastagi, emulators, questions):
    call = place_call(rig, "3004", ["silence", "silence"])
    call.wait()
    row, turns = db_rows("3004")
    assert [t["status"] for t in turns] == ["no_speech", "no_speech"]
    assert emulators["speech"].requests == []  # nothing said: no paid request
    played = playbacks(rig, "3004", "goodbye")
    assert any("didnt-catch" in p for p in played) and any("goodbye" in p for p in played), played


@pytest.mark.parametrize("failing,status", [("gemini", "llm_error"), ("tts", "tts_error"), ("speech", "stt_error")])
def test_provider_failure_plays_the_cant_answer_prompt(rig, fastagi, emulators, questions, failing, status):
    from harness.emulators import Fail, Hang

    key = {"gemini": "4001", "tts": "4002", "speech": "4003"}[failing]
    if failing == "tts":
        emulators["tts"].queue(Hang(4), Hang(4))  # timeouts, with the retry
    else:
        emulators[failing].queue(Fail(500), Fail(503))
    call = place_call(rig, key, [questions["hours"]], context="voiceassist-fastagi" if failing == "tts" else "voiceassist")
    call.wait()
    row, turns = db_rows(key)
    assert turns[0]["status"] == status, turns[0]
    assert turns[0]["error"]
    assert any("cant-answer" in p for p in playbacks(rig, key, "cant-answer"))
    assert "Traceback" not in (SHARED / "voiceassist.log").read_text()


HOSTILE_NAME = b'Eve "quote" \\back\\ \nSET VARIABLE INJECTED 1\n\r\t\x07 \xff\xfe caf\xc3\xa9'
HOSTILE_REPLY = ('Sure "boss" \\ here:\n\nSET VARIABLE INJECTED 1\nVERBOSE "pwned" 1\r\n'
                 '\x00\x1b[31m ünïcode ✓ ) (x) endpos=5 ' + "long " * 500)


@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_hostile_caller_id_and_llm_output_cannot_inject_agi_commands(rig, fastagi, emulators, questions, context):
    from voiceassist.asterisk.agi import sanitize_text
    from voiceassist.text.speakable import speakable

    key = "5001" if context == "voiceassist" else "5002"
    emulators["gemini"].reply = lambda body: HOSTILE_REPLY
    call = place_call(rig, key, [questions["hours"]], context=context, caller_name=HOSTILE_NAME)
    call.wait()
    row, turns = db_rows(key)
    assert turns[0]["status"] == "ok", turns[0]["error"]
    spoken = speakable(HOSTILE_REPLY)
    assert turns[0]["reply"] == spoken  # what was said, stored exactly
    assert answer_heard(call, spoken) >= 1.2
    hook = turn_log_lines(rig, row["uniqueid"])
    assert hook, "the after-turn hook did not run"
    _turn, status, reply_in_asterisk, injected = hook[0]
    assert status == "ok" and injected == ""
    # Asterisk holds the reply as one line, control characters replaced, nothing else changed.
    assert reply_in_asterisk == sanitize_text(spoken[:1000])
    assert "INJECTED" not in rig.cli("dialplan show globals")
    assert "Eve" in row["caller_name"]


def test_caller_hanging_up_during_the_answer_ends_the_call_cleanly(rig, fastagi, emulators, questions):
    emulators["tts"].seconds = 8.0  # a long answer; the caller leaves about halfway through it
    call = place_call(rig, "3005", [questions["hours"]], context="voiceassist-fastagi", listen=6)
    call.wait()
    row, turns = db_rows("3005")
    assert [(t["turn_number"], t["status"]) for t in turns] == [(1, "ok")]
    assert row["ended_at"]
    heard = answer_heard(call, turns[0]["reply"])
    assert 0.5 < heard < 7.0, heard  # part of the answer, not all of it
    assert rig.wait_for_log(rf"\[DB\] {re.escape(row['uniqueid'])} call ended \(state answering")
    assert "Traceback" not in (SHARED / "voiceassist.log").read_text()
