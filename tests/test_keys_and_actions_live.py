"""Keys and actions in the real-time conversation, over the simulated phone line (harness/phone_leg.py)
with the real SDKs against the emulators: # skips the rest of the answer, * says the last answer
again, 0 transfers to the operator, and a transfer the model asks for ends the conversation with
the action for the dialplan once the caller has heard why. What the caller heard is analysed as
audio (the answer is a tone naming its text)."""

from __future__ import annotations

import pytest

from harness.emulators.openai_api import tone_for
from harness.phone_leg import PhoneLeg
from harness.speech import tone_spans
from tests.test_realtime_conversation import (
    GREETING_S,
    QUESTION,
    RATE,
    answer_tone,
    converse,
    live_assistant,
    questions,  # noqa: F401  (the module's fixture)
    stored_turns,
)
from voiceassist.call.actions import ActionKind
from voiceassist.call.realtime import EndReason
from voiceassist.types import ToolCall

ACTIONS = """
[destinations]
reception = from-internal,200,1 | The front desk
sales = ext-queues,400,1 | The sales team
[actions]
operator = reception
"""
TRANSFERRING = "Transferring you to reception."


@pytest.fixture
def long_answers(emulators):
    emulators["tts"].seconds = 3.0


def test_pound_during_the_answer_skips_the_rest_and_the_caller_may_ask_again(
        emulators, speech_grpc, tmp_path, questions, long_answers):  # noqa: F811
    assistant = live_assistant(emulators, speech_grpc, tmp_path, ACTIONS)
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.press("#", at=asked_at + 4.0)            # about a second into the three-second answer
    leg.say(questions["second"], at=asked_at + 6.0)
    leg.hang_up_at(asked_at + 13.0)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.HANGUP and outcome.turns == 2
    (start, end), = tone_spans(leg.heard_pcm(), RATE, answer_tone(QUESTION))
    assert end - start < 2.0                      # cut short, not the whole three seconds
    first, second = stored_turns(assistant)
    assert first["interrupted"] and first["played_ms"] < 2000
    assert second["status"] == "ok" and second["transcript"] != QUESTION


def test_star_says_the_last_answer_again(emulators, speech_grpc, tmp_path, questions):  # noqa: F811
    assistant = live_assistant(emulators, speech_grpc, tmp_path, ACTIONS)
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.press("*", at=asked_at + 5.5)
    leg.hang_up_at(asked_at + 9.0)
    outcome = converse(assistant, leg)
    assert outcome.turns == 2
    spans = tone_spans(leg.heard_pcm(), RATE, answer_tone(QUESTION))
    assert len(spans) == 2, spans                 # the same answer, twice
    first, again = stored_turns(assistant)
    assert again["transcript"] == "[key *]" and again["reply"] == first["reply"]
    assert again["llm_provider"] == "keys"


def test_zero_transfers_to_the_operator_after_saying_so(emulators, speech_grpc, tmp_path):
    assistant = live_assistant(emulators, speech_grpc, tmp_path, ACTIONS)
    leg = PhoneLeg(RATE)
    leg.press("0", at=GREETING_S + 0.5)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.TRANSFER
    assert outcome.action.kind is ActionKind.TRANSFER and outcome.action.target == "from-internal,200,1"
    assert tone_spans(leg.heard_pcm(), RATE, tone_for(TRANSFERRING))  # heard why before leaving
    (turn,) = stored_turns(assistant)
    assert turn["action"] == "transfer" and turn["reply"] == TRANSFERRING
    assert leg.hung_up_by_us.is_set()


def test_keys_do_nothing_that_is_not_configured(emulators, speech_grpc, tmp_path):
    assistant = live_assistant(emulators, speech_grpc, tmp_path)  # no operator destination
    leg = PhoneLeg(RATE)
    leg.press("0", at=GREETING_S + 0.5)
    leg.hang_up_at(GREETING_S + 2.5)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.HANGUP and outcome.action is None and stored_turns(assistant) == []


def test_the_model_transferring_ends_the_conversation_with_the_action(emulators, speech_grpc, tmp_path,
                                                                     questions):  # noqa: F811
    emulators["gemini"].reply = lambda body: ToolCall("transfer", {"destination": "sales"})
    assistant = live_assistant(emulators, speech_grpc, tmp_path, ACTIONS)
    leg = PhoneLeg(RATE)
    leg.say(questions["first"], at=GREETING_S + 0.5)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.TRANSFER and outcome.action.target == "ext-queues,400,1"
    (start, end), = tone_spans(leg.heard_pcm(), RATE, tone_for("Transferring you to sales."))
    assert end - start == pytest.approx(emulators["tts"].seconds, abs=0.06)  # heard all of it first
    (turn,) = stored_turns(assistant)
    assert turn["transcript"] == QUESTION and turn["action"] == "transfer" and turn["llm_provider"] == "gemini"


def test_other_keys_are_told_to_the_model_when_asked(emulators, speech_grpc, tmp_path):
    emulators["gemini"].reply = lambda body: "Option three: our opening hours."
    assistant = live_assistant(emulators, speech_grpc, tmp_path, ACTIONS + "keys_to_model = yes\n")
    leg = PhoneLeg(RATE)
    leg.press("3", at=GREETING_S + 0.5)
    leg.hang_up_at(GREETING_S + 4.0)
    converse(assistant, leg)
    (turn,) = stored_turns(assistant)
    assert turn["transcript"] == "(The caller pressed 3 on the phone's keypad.)" and turn["stt_provider"] == "keys"
    assert turn["reply"] == "Option three: our opening hours." and turn["llm_provider"] == "gemini"
    assert tone_spans(leg.heard_pcm(), RATE, tone_for("Option three: our opening hours."))
