"""The real-time conversation engine over a phone line simulated in real time (harness/phone_leg.py):
the real SDKs against the emulators (Google Speech's gRPC stream, Gemini, OpenAI speech), our
prompts, a real SQLite journal. What the caller heard is analysed as audio: the answer is a tone
whose frequency names its text (harness/emulators/openai_api.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from harness.emulators.openai_api import tone_for
from harness.helpers import config_for, streaming_providers
from harness.phone_leg import PhoneLeg
from harness.speech import speech_end_seconds, spoken_question, tone_spans
from voiceassist.audio.prompts import PromptSounds
from voiceassist.call.assistant import Assistant
from voiceassist.call.listening import STREAM_PIECE_SECONDS
from voiceassist.call.realtime import EndReason, LiveConversation, LiveOutcome
from voiceassist.types import CallInfo

REPO = Path(__file__).resolve().parents[1]
MARKER_HZ = 2500.0
QUESTION = "Can a plumber come on Saturday morning?"
SECOND_MARKER_HZ = 2900.0
SECOND_QUESTION = "And how much does that cost?"
GREETING_S = len((REPO / "sounds/live-greeting.ulaw").read_bytes()) / 8000
RATE = 8000


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("live-questions")
    return {"first": spoken_question(directory, QUESTION, MARKER_HZ, RATE),
            "second": spoken_question(directory, SECOND_QUESTION, SECOND_MARKER_HZ, RATE)}


def live_assistant(emulators, speech_grpc, tmp_path, extra: str = "") -> Assistant:
    speech_grpc.transcripts[MARKER_HZ] = QUESTION
    speech_grpc.transcripts[SECOND_MARKER_HZ] = SECOND_QUESTION
    config = config_for(emulators, tmp_path, extra=f"""{streaming_providers(speech_grpc.endpoint)}
[live]
still_there_after = 4
goodbye_after = 3
{extra}""")
    assistant = Assistant(config)
    assert not assistant.prepare()  # as `serve` does: SDK clients made before the first call
    return assistant


CALL = CallInfo(uniqueid="1733000000.42", channel="PJSIP/100-00000001", caller_number="100", caller_name="Alice")


def converse(assistant: Assistant, leg: PhoneLeg, timeout: float = 40.0) -> LiveOutcome:
    conversation = LiveConversation(leg, assistant, CALL, PromptSounds([REPO / "sounds"]))
    result: list[LiveOutcome] = []
    thread = threading.Thread(target=lambda: result.append(conversation.run()), daemon=True)
    leg.start()
    thread.start()
    thread.join(timeout)
    assert result, "the conversation did not end"
    return result[0]


def stored_turns(assistant: Assistant) -> list[dict]:
    _, turns = assistant.journal().store().call_rows(CALL.uniqueid)
    return turns


def answer_tone(question: str, turn: int = 1) -> float:
    """The tone of the emulated answer's one sentence (Gemini's default reply echoes the question)."""
    return tone_for(f"Answer {turn}: you asked, {question}")


def test_a_question_is_answered_in_real_time_and_stored(emulators, speech_grpc, tmp_path, questions):
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 7.0)
    outcome = converse(assistant, leg)

    assert outcome.reason is EndReason.HANGUP and outcome.turns == 1
    heard = leg.heard_pcm()
    spans = tone_spans(heard, RATE, answer_tone(QUESTION))
    assert len(spans) == 1, spans
    start, end = spans[0]
    assert end - start == pytest.approx(emulators["tts"].seconds, abs=0.06)
    (turn,) = stored_turns(assistant)
    assert turn["status"] == "ok" and turn["transcript"] == QUESTION
    assert turn["reply"] == f"Answer 1: you asked, {QUESTION}" and not turn["interrupted"]
    assert turn["stt_provider"] == "google_speech" and turn["llm_provider"] == "gemini"
    assert turn["played_ms"] == pytest.approx(1500, abs=40)
    # From the end of the question's speech to the answer at the caller: the end silence (500 ms;
    # the recogniser's final came 150 ms after the speech, the model and the voice have no latency).
    speech_end = asked_at + speech_end_seconds(questions["first"], RATE)
    assert 0.48 < start - speech_end < 0.7, (start, speech_end)
    assert 480 < turn["speech_to_audio_ms"] < 700
    # The recogniser's 150 ms, plus up to one piece of audio not yet sent when the speech ended.
    assert turn["stt_ms"] == pytest.approx(150 + STREAM_PIECE_SECONDS * 500, abs=60)


def test_a_line_that_sends_nothing_while_the_caller_is_quiet_still_ends_the_question(
        emulators, speech_grpc, tmp_path, questions):
    """Silence suppression (and Asterisk's Local channel) stop the frames between words: the end
    silence is counted on the clock."""
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE, silence_suppression=True)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 7.0)
    converse(assistant, leg)
    (turn,) = stored_turns(assistant)
    assert turn["status"] == "ok" and turn["transcript"] == QUESTION
    start = tone_spans(leg.heard_pcm(), RATE, answer_tone(QUESTION))[0][0]
    assert 0.48 < start - (asked_at + speech_end_seconds(questions["first"], RATE)) < 0.8


def test_caller_audio_taken_in_late_is_not_cut_by_made_up_silence(emulators, speech_grpc, tmp_path, questions):
    """A server too busy to take in the caller's frames for 0.7 s in the middle of the question
    (longer than the 500 ms end silence): the frames were on their way, so no silence is made up
    for them; the question is heard whole, as one utterance."""
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    asked_at = GREETING_S + 0.5
    length = len(questions["first"]) / 2 / RATE
    leg = PhoneLeg(RATE, stall=(asked_at + length / 2, 0.7))
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 7.0)
    converse(assistant, leg)
    (turn,) = stored_turns(assistant)
    assert turn["status"] == "ok" and turn["transcript"] == QUESTION
    # What the recogniser got is the question's own length (plus the start and end the tracker
    # keeps), not 0.7 s more.
    assert turn["recording_ms"] < (length + 1.0) * 1000, (turn["recording_ms"], length)


def test_the_second_question_has_the_first_exchange_as_history(emulators, speech_grpc, tmp_path, questions):
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    second_at = first_at + len(questions["first"]) / 2 / RATE + 3.5
    leg.say(questions["first"], at=first_at)
    leg.say(questions["second"], at=second_at)
    leg.hang_up_at(second_at + 6.0)
    outcome = converse(assistant, leg)

    assert outcome.turns == 2
    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    generate = [r for r in emulators["gemini"].requests if "generatecontent" in r.path.lower()]
    contents = generate[-1].json()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert f"Answer 1: you asked, {QUESTION}" in str(contents[1])


def test_the_caller_interrupts_a_long_answer_and_is_answered(emulators, speech_grpc, tmp_path, questions):
    emulators["tts"].seconds = 6.0
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    leg.say(questions["first"], at=first_at)
    # The answer starts about 0.7 s after the question's speech ends; 1 s into it, the caller talks.
    first_end = first_at + len(questions["first"]) / 2 / RATE
    barge_at = first_end + 0.7 + 1.0
    leg.say(questions["second"], at=barge_at)
    leg.hang_up_at(barge_at + 12.0)
    outcome = converse(assistant, leg)

    heard = leg.heard_pcm()
    first_spans = tone_spans(heard, RATE, answer_tone(QUESTION))
    assert first_spans, "the first answer was not heard"
    stopped = first_spans[-1][1]
    # The marker tone of the second question starts at barge_at; voice follows it at once.
    assert 0.0 < stopped - barge_at < 0.35, (stopped, barge_at)
    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    assert turns[0]["interrupted"] and turns[0]["status"] == "ok"
    played = turns[0]["played_ms"] / 1000
    assert played == pytest.approx(stopped - first_spans[0][0], abs=0.1)
    heard_words = turns[0]["heard_reply"].replace(" ...", "").split()
    assert 0 < len(heard_words) < len(turns[0]["reply"].split())
    assert not turns[1]["interrupted"]
    assert tone_spans(heard, RATE, answer_tone(SECOND_QUESTION, 2)), "the second question was not answered"
    assert outcome.turns == 2


def test_silence_asks_whether_the_caller_is_there_then_says_goodbye(emulators, speech_grpc, tmp_path):
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE)
    started = time.monotonic()
    outcome = converse(assistant, leg)
    took = time.monotonic() - started
    assert outcome.reason is EndReason.SILENCE and outcome.turns == 0
    assert leg.hung_up_by_us.is_set()
    marks = [name for name, _ in leg.marks_fired]
    assert any("still-there" in m for m in marks) and any("goodbye" in m for m in marks)
    # greeting, 4 s, "are you still there?", 3 s, goodbye
    assert GREETING_S + 4 + 3 < took < GREETING_S + 4 + 3 + 6


def test_pound_ends_the_call_politely(emulators, speech_grpc, tmp_path):
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE)
    leg.press("#", at=GREETING_S + 0.3)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.CALLER_ENDED and leg.hung_up_by_us.is_set()
    assert any("goodbye" in m for m, _ in leg.marks_fired)


def test_the_model_failing_gets_an_apology_and_the_caller_may_ask_again(emulators, speech_grpc, tmp_path, questions):
    from harness.emulators import Fail

    emulators["gemini"].script.extend([Fail(500), Fail(500)])
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    leg.say(questions["first"], at=first_at)
    second_at = first_at + len(questions["first"]) / 2 / RATE + 6.0
    leg.say(questions["second"], at=second_at)
    leg.hang_up_at(second_at + 6.0)
    outcome = converse(assistant, leg)
    turns = stored_turns(assistant)
    assert [t["status"] for t in turns] == ["llm_error", "ok"], turns
    assert outcome.turns == 2
    assert tone_spans(leg.heard_pcm(), RATE, answer_tone(SECOND_QUESTION, 1))


def test_the_caller_hanging_up_mid_answer_stores_the_turn_as_heard(emulators, speech_grpc, tmp_path, questions):
    emulators["tts"].seconds = 6.0
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    leg.say(questions["first"], at=first_at)
    leg.hang_up_at(first_at + len(questions["first"]) / 2 / RATE + 2.5)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.HANGUP
    (turn,) = stored_turns(assistant)
    assert turn["status"] == "ok" and turn["interrupted"] and turn["error"] == "caller hung up during the answer"
    assert 1000 < turn["played_ms"] < 2500


def test_no_false_barge_in_from_the_answers_own_echo_or_a_cough(emulators, speech_grpc, tmp_path, questions):
    emulators["tts"].seconds = 4.0
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    leg = PhoneLeg(RATE, echo_db=-20.0)
    first_at = GREETING_S + 0.5
    leg.say(questions["first"], at=first_at)
    leg.hang_up_at(first_at + len(questions["first"]) / 2 / RATE + 6.5)
    converse(assistant, leg)
    spans = tone_spans(leg.heard_pcm(), RATE, answer_tone(QUESTION))
    assert sum(b - a for a, b in spans) == pytest.approx(4.0, abs=0.06), spans
    (turn,) = stored_turns(assistant)
    assert not turn["interrupted"]


def trimmed(pcm: bytes) -> bytes:
    """Without the quiet espeak-ng leaves before and after the words (the pause must be exact)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.abs(frames.astype(np.float64)).mean(axis=1) > 256)
    return frames[loud[0]: loud[-1] + 1].tobytes()


PAUSED = [("I need a plumber", 0.4, "for my kitchen sink"), ("Can you tell me", 0.45, "when you open")]


@pytest.mark.parametrize("parts", PAUSED, ids=["pause-400ms", "pause-450ms"])
def test_a_caller_who_pauses_mid_sentence_is_not_cut_off(emulators, speech_grpc, tmp_path, parts):
    """The recogniser's final words come 150 ms into the pause and the answer is prepared on
    them, but it is held: the caller hears nothing until they have finished for the end silence."""
    first, pause, rest = parts
    directory = tmp_path / "paused"
    head = trimmed(spoken_question(directory, first, MARKER_HZ, RATE))
    tail = trimmed(spoken_question(directory, rest, 0.0, RATE)[int(0.3 * RATE) * 2:])  # no marker before the rest
    question = head + b"\0\0" * int(pause * RATE) + tail
    assistant = live_assistant(emulators, speech_grpc, tmp_path)
    # A recogniser in single-utterance mode ends its stream at the pause; the rest of the question
    # goes to a new stream (no marker tone there: the emulator's default transcript).
    speech_grpc.transcripts[MARKER_HZ] = first
    speech_grpc.default_transcript = rest
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(question, at=asked_at)
    leg.hang_up_at(asked_at + len(question) / 2 / RATE + 4.0)
    outcome = converse(assistant, leg)
    (turn,) = stored_turns(assistant)
    assert turn["transcript"] == f"{first} {rest}" and not turn["interrupted"]
    spans = tone_spans(leg.heard_pcm(), RATE, tone_for(turn["reply"]))
    assert len(spans) == 1, spans
    last_word = asked_at + speech_end_seconds(question, RATE)
    assert spans[0][0] - last_word > 0.45, (spans, last_word)
    assert outcome.turns == 1
