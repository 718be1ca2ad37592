"""Real-time calls held by a speech-to-speech model: OpenAI's Realtime API ([live] engine =
openai_realtime, the openai SDK's WebSocket client against harness/emulators/openai_realtime.py)
and Gemini's Live API ([live] engine = gemini_live, google-genai against
harness/emulators/gemini_live.py over TLS), over a phone line simulated in real time. Each test
runs with both engines where the behaviour is the same: the caller is answered and both sides are
stored, a barge-in stops the answer (and the Realtime session is trimmed to what was heard), the
model's transfer is carried out after it told the caller, a business tool's result reaches the
model, and a failure hands the call to the cascade."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.emulators.openai_api import tone_for
from harness.phone_leg import PhoneLeg
from harness.speech import speech_end_seconds
from tests.test_conversation_engines import ask_twice, converse, engine_answer, spans_of
from tests.test_http_tools import Shop, order_tool, tools_file
from tests.test_provider_alternatives import service_account
from tests.test_realtime_conversation import (GREETING_S, MARKER_HZ, QUESTION, RATE, SECOND_MARKER_HZ,
                                              SECOND_QUESTION, live_assistant, questions, stored_turns)
from voiceassist.call.assistant import Assistant
from voiceassist.call.realtime import EndReason

__all__ = ["questions", "service_account"]  # fixtures shared with the cascade's tests

ENGINES = ["openai_realtime", "gemini_live"]
DESTINATIONS = """[destinations]
reception = from-internal,200,1 | The front desk
sales = ext-queues,400,1 | The sales team: quotes and new orders
"""


@pytest.fixture
def shop():
    server = Shop()
    yield server
    server.close()


class Engine:
    """One engine under test: its emulator and the assistant configured for it."""

    def __init__(self, name: str, emulator, emulators, speech_grpc, tmp_path, monkeypatch) -> None:
        self.name, self.emulator = name, emulator
        self._args = (emulators, speech_grpc, tmp_path)
        emulator.transcripts = {MARKER_HZ: QUESTION, SECOND_MARKER_HZ: SECOND_QUESTION}
        if name == "gemini_live":
            # The SDK always connects over TLS: the emulator's certificate is trusted this way.
            monkeypatch.setenv("SSL_CERT_FILE", emulator.ca_file)

    def assistant(self, extra: str = "", section: str = "") -> Assistant:
        if self.name == "openai_realtime":
            settings = f"""[openai_realtime]
base_url = {self.emulator.base_url}
vad_silence_duration_ms = 400
response_timeout = 3
connect_timeout = 2
reconnect = 0
{section}"""
        else:
            settings = f"""[gemini_live]
base_url = {self.emulator.base_url}
api_key = {self.emulator.api_key}
model = gemini-live-2.5-flash-native-audio
vad_silence_duration_ms = 400
response_timeout = 3
connect_timeout = 2
reconnect = 0
{section}"""
        return live_assistant(*self._args, extra=f"engine = {self.name}\n{settings}\n{extra}")

    def sessions(self) -> list:
        return self.emulator.connections if self.name == "openai_realtime" else self.emulator.sessions


@pytest.fixture(params=ENGINES)
def engine(request, emulators, speech_grpc, tmp_path, monkeypatch):
    if request.param == "openai_realtime":
        emulator = emulators["realtime"]
    else:  # asked for here, not by name: the autouse reset does not see it
        emulator = request.getfixturevalue("gemini_live")
        emulator.reset()
    return Engine(request.param, emulator, emulators, speech_grpc, tmp_path, monkeypatch)


def test_the_model_answers_the_caller_and_both_sides_are_stored(engine, questions):
    assistant = engine.assistant()
    leg, first_at, second_at = ask_twice(questions, hang_up_after=7.0)
    outcome = converse(assistant, leg)

    assert outcome.reason is EndReason.HANGUP and outcome.turns == 2
    first = spans_of(leg, engine_answer(QUESTION))
    second = spans_of(leg, engine_answer(SECOND_QUESTION, 2))
    # Gemini's 24 kHz answer is brought down to the line's 8 kHz: the same tone, whole.
    assert len(first) == 1 and len(second) == 1, (first, second)
    assert first[0][1] - first[0][0] == pytest.approx(engine.emulator.answer_seconds, abs=0.08)
    speech_end = first_at + speech_end_seconds(questions["first"], RATE)
    assert 0.4 < first[0][0] - speech_end < 1.0, (first[0][0], speech_end)

    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    assert [t["reply"] for t in turns] == [engine_answer(QUESTION), engine_answer(SECOND_QUESTION, 2)]
    assert all(t["status"] == "ok" and not t["interrupted"] for t in turns)
    assert {t["stt_provider"] for t in turns} == {t["tts_provider"] for t in turns} == {engine.name}
    assert turns[0]["played_ms"] == pytest.approx(2000, abs=60)
    assert 300 < turns[0]["speech_to_audio_ms"] < 1000


def test_the_realtime_session_is_set_up_for_the_phone_line(engine, questions):
    """What the model was told: μ-law both ways (Realtime) or 16 kHz in (Live), the system prompt,
    transcription of the caller, the server's end-of-speech settings, the voice."""
    assistant = engine.assistant(section="voice = Kore\n" if engine.name == "gemini_live" else "voice = cedar\n")
    leg = PhoneLeg(RATE)
    leg.say(questions["first"], at=GREETING_S + 0.5)
    leg.hang_up_at(GREETING_S + 0.5 + len(questions["first"]) / 2 / RATE + 3.5)
    converse(assistant, leg)
    prompt = assistant.config.llm.system_prompt
    if engine.name == "openai_realtime":
        (connection,) = engine.sessions()
        assert connection["path"].startswith("/v1/realtime?model=gpt-realtime")
        assert connection["headers"]["authorization"] == "Bearer sk-test-openai-key-456"
        update = next(e for e in connection["events"] if e["type"] == "session.update")["session"]
        audio = update["audio"]
        assert audio["input"]["format"] == {"type": "audio/pcmu"} == audio["output"]["format"]
        assert audio["input"]["turn_detection"]["type"] == "server_vad"
        assert audio["input"]["turn_detection"]["silence_duration_ms"] == 400
        assert audio["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
        assert audio["output"]["voice"] == "cedar"
        assert prompt in update["instructions"]
        # The caller's audio went on as it came: about 8000 μ-law bytes a second.
        assert connection["audio_bytes"] > 8000 * GREETING_S
    else:
        (session,) = engine.sessions()
        assert session.api_key == engine.emulator.api_key
        assert session.model.endswith("gemini-live-2.5-flash-native-audio")
        assert session.voice == "Kore" and prompt in session.system_instruction
        assert session.input_transcription is not None and session.output_transcription is not None
        assert set(session.audio_mime_types) == {"audio/pcm;rate=16000"}
        # 8 kHz brought up to 16 kHz: about 32000 bytes a second.
        assert session.audio_bytes > 32000 * GREETING_S


def test_talking_over_the_answer_stops_it_and_the_model_keeps_what_was_heard(engine, questions):
    engine.emulator.answer_seconds = 6.0
    assistant = engine.assistant()
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    first_end = first_at + len(questions["first"]) / 2 / RATE
    barge_at = first_end + 0.6 + 1.5
    leg.say(questions["first"], at=first_at)
    leg.say(questions["second"], at=barge_at)
    leg.hang_up_at(barge_at + 12.0)
    converse(assistant, leg)

    first = spans_of(leg, engine_answer(QUESTION))
    assert first, "the first answer was not heard"
    stopped = first[-1][1]
    assert 0.0 < stopped - barge_at < 0.45, (stopped, barge_at)
    turns = stored_turns(assistant)
    assert turns[0]["interrupted"] and turns[0]["status"] == "ok"
    played = turns[0]["played_ms"]
    assert played / 1000 == pytest.approx(stopped - first[0][0], abs=0.1)
    assert 0 < len(turns[0]["heard_reply"].split()) < len(turns[0]["reply"].split())
    assert turns[1]["transcript"] == SECOND_QUESTION and not turns[1]["interrupted"]
    assert spans_of(leg, engine_answer(SECOND_QUESTION, 2))
    if engine.name == "openai_realtime":
        # The answer's item is cut to what the caller heard, so the model knows where it stopped.
        events = engine.sessions()[0]["events"]
        (truncate,) = [e for e in events if e["type"] == "conversation.item.truncate"]
        assert truncate["audio_end_ms"] == pytest.approx(played, abs=60)
        assert truncate["content_index"] == 0 and truncate["item_id"]


def test_a_transfer_the_model_asks_for_is_carried_out_after_it_told_the_caller(engine, questions):
    engine.emulator.tool_calls = {QUESTION: ("transfer", {"destination": "sales"})}
    assistant = engine.assistant(extra=DESTINATIONS)
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 15.0)
    outcome = converse(assistant, leg)

    assert outcome.reason is EndReason.TRANSFER
    assert outcome.action is not None and outcome.action.target == "ext-queues,400,1"
    assert leg.hung_up_by_us.is_set()  # the media leg ends; the dialplan transfers
    # The model was told it is done, and said so (its answer to the function's output).
    confirmation = "Answer 1: Done. Tell the caller only this, in a few words: Transferring you to sales."
    heard = spans_of(leg, confirmation)
    assert len(heard) == 1 and heard[0][1] - heard[0][0] == pytest.approx(engine.emulator.answer_seconds, abs=0.08)
    (turn,) = stored_turns(assistant)
    assert turn["transcript"] == QUESTION and turn["reply"] == confirmation
    assert turn["action"] == "transfer" and turn["action_target"] == "sales (ext-queues,400,1)"


def test_a_transfer_to_a_destination_not_configured_is_refused_and_explained(engine, questions):
    engine.emulator.tool_calls = {QUESTION: ("transfer", {"destination": "+1 900 555 0100"})}
    assistant = engine.assistant(extra=DESTINATIONS)
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 8.0)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.HANGUP and outcome.action is None
    refusal = ("Answer 1: Not done: that is not allowed. Tell the caller: Sorry, I can't do that. "
               "I can transfer you to reception or sales.")
    assert spans_of(leg, refusal)
    (turn,) = stored_turns(assistant)
    assert turn["action"] is None and turn["reply"] == refusal


def test_a_business_tool_the_model_calls_is_looked_up_and_answered_from(engine, questions, shop, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("SHOP_TOKEN", "tok-123")
    path = tools_file(tmp_path, [order_tool(shop)])
    engine.emulator.tool_calls = {QUESTION: ("order_status", {"order": "AB-123"})}
    assistant = engine.assistant(extra=f"[tools]\nfile = {path}\n")
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 9.0)
    converse(assistant, leg)

    (request,) = shop.requests
    assert request["path"] == "/orders/AB-123" and request["headers"]["Authorization"] == "Bearer tok-123"
    result = json.dumps({"order": "AB-123", "status": "shipped"})
    answer = f"Answer 1: {result}"
    if engine.name == "gemini_live":
        (response,) = engine.sessions()[0].tool_responses
        assert json.loads(response["response"]["result"]) == {"order": "AB-123", "status": "shipped"}
        answer = f"Answer 1: {response['response']['result']}"
    assert spans_of(leg, answer), "the answer from the tool's result was not heard"
    (turn,) = stored_turns(assistant)
    assert turn["transcript"] == QUESTION and turn["reply"] == answer and turn["status"] == "ok"


@pytest.mark.parametrize("fault", ["connection closed", "fatal error"])
def test_a_model_failing_mid_call_is_followed_by_one_moment_and_the_cascade(engine, questions, emulators, fault):
    if fault == "connection closed":
        engine.emulator.close_at_question = 2
    else:
        engine.emulator.fatal_at_question = 2
    assistant = engine.assistant()
    leg, first_at, second_at = ask_twice(questions, hang_up_after=14.0)
    outcome = converse(assistant, leg)

    assert spans_of(leg, engine_answer(QUESTION)), "the model's first answer was not heard"
    assert any("one-moment" in name for name, _ in leg.marks_fired)
    assert spans_of(leg, engine_answer(SECOND_QUESTION, 2)), "the cascade did not answer"
    turns = stored_turns(assistant)
    assert [t["llm_provider"] for t in turns] == [engine.name, "gemini"]
    assert outcome.turns == 2


@pytest.mark.parametrize("fault", ["refused", "wrong key"])
def test_a_model_that_cannot_be_reached_leaves_the_call_to_the_cascade(engine, questions, fault):
    if fault == "refused":
        if engine.name == "openai_realtime":
            from harness.emulators import Fail
            engine.emulator.queue(Fail(401))
        else:
            engine.emulator.refuse_status = 503
        assistant = engine.assistant()
    else:
        assistant = engine.assistant(section="api_key = wrong-key\n")
        if engine.name == "openai_realtime":
            from harness.emulators import Fail
            engine.emulator.queue(Fail(401))
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 8.0)
    outcome = converse(assistant, leg)
    assert outcome.turns == 1
    assert spans_of(leg, engine_answer(QUESTION)), "the cascade did not answer"
    (turn,) = stored_turns(assistant)
    assert turn["llm_provider"] == "gemini"


def test_gemini_answers_keep_their_pitch_through_the_resampling(gemini_live, emulators, speech_grpc, tmp_path,
                                                                monkeypatch, questions):
    """24 kHz in 0.2 s chunks to the line's 8 kHz with one resampler for the answer: the tone is
    clean (no clicks at the chunk edges: nearly all of its energy at its frequency)."""
    engine = Engine("gemini_live", gemini_live, emulators, speech_grpc, tmp_path, monkeypatch)
    assistant = engine.assistant()
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 6.0)
    converse(assistant, leg)
    (span,) = spans_of(leg, engine_answer(QUESTION))
    heard = np.frombuffer(leg.heard_pcm(), dtype="<i2").astype(np.float64)
    piece = heard[int((span[0] + 0.1) * RATE):int((span[1] - 0.1) * RATE)]
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece)))) ** 2
    frequency = tone_for(engine_answer(QUESTION))
    band = int(round(frequency * len(piece) / RATE))
    assert spectrum[band - 8: band + 9].sum() / spectrum.sum() > 0.98


def test_a_model_session_that_closes_mid_call_is_opened_again(engine, questions):
    """reconnect = 1: the connection closes as the second question ends; a new session, told the
    first exchange, hears the question again and answers it: no cascade."""
    engine.emulator.close_at_question = 2
    assistant = engine.assistant(section="reconnect = 1\n")
    leg, first_at, second_at = ask_twice(questions, hang_up_after=9.0)
    outcome = converse(assistant, leg)
    assert outcome.turns == 2
    assert spans_of(leg, engine_answer(SECOND_QUESTION, 1)), "the new session did not answer"
    assert not any("one-moment" in name for name, _ in leg.marks_fired)
    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    assert {t["llm_provider"] for t in turns} == {engine.name}
    sessions = engine.sessions()
    assert len(sessions) == 2
    if engine.name == "openai_realtime":
        update = next(e for e in sessions[1]["events"] if e["type"] == "session.update")["session"]
        assert engine_answer(QUESTION) in update["instructions"].split("The conversation so far:")[1]
    else:
        assert engine_answer(QUESTION) in sessions[1].system_instruction.split("The conversation so far:")[1]



def test_gemini_live_on_vertex_ai_uses_the_service_accounts_token(gemini_live, emulators, speech_grpc, tmp_path,
                                                                 monkeypatch, questions, service_account):
    """backend = vertex: the service account is exchanged for a token (the Gemini emulator's token
    endpoint), and the Live session is Vertex AI's (its path, its model name, the token)."""
    engine = Engine("gemini_live", gemini_live, emulators, speech_grpc, tmp_path, monkeypatch)
    assistant = engine.assistant(section=f"""backend = vertex
project = test-proj
location = europe-west1
credentials_file = {service_account}
""")
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 6.0)
    converse(assistant, leg)
    assert spans_of(leg, engine_answer(QUESTION))
    (session,) = gemini_live.sessions
    assert session.path.startswith("/ws/google.cloud.aiplatform.")
    assert session.headers["authorization"].startswith("Bearer ya29.")
    assert session.model == ("projects/test-proj/locations/europe-west1/publishers/google/models/"
                             "gemini-live-2.5-flash-native-audio")
    assert len(emulators["gemini"].token_requests) == 1


def test_the_operator_key_is_confirmed_by_the_model_then_transfers(emulators, speech_grpc, tmp_path, monkeypatch,
                                                                  questions):
    """Key 0 with the Realtime model: it is told to say the transfer, says it (its answer to that
    text), and once that has played the call goes on to the dialplan."""
    engine = Engine("openai_realtime", emulators["realtime"], emulators, speech_grpc, tmp_path, monkeypatch)
    assistant = engine.assistant(extra=DESTINATIONS + "[actions]\noperator = reception\n")
    leg = PhoneLeg(RATE)
    leg.press("0", at=GREETING_S + 0.5)
    outcome = converse(assistant, leg, timeout=25)
    assert outcome.reason is EndReason.TRANSFER and outcome.action.target == "from-internal,200,1"
    said = ("Answer 1: you said, (The caller pressed the operator key. Tell them only this: "
            "Transferring you to reception.)")
    (heard,) = spans_of(leg, said)
    assert heard[1] - heard[0] == pytest.approx(engine.emulator.answer_seconds, abs=0.08)
    (turn,) = stored_turns(assistant)
    assert (turn["transcript"], turn["reply"], turn["action"]) == ("[key 0]", said, "transfer")


def test_our_own_voice_detection_can_replace_the_servers_and_cancels_an_answer_being_made(
        emulators, speech_grpc, tmp_path, monkeypatch, questions):
    """[openai_realtime] turn_detection = local: the server is given no turn detection; our voice
    detector commits each question and asks for the answer, and when the caller talks over an
    answer the model is still making, the session sends response.cancel and truncates the answer
    to what was heard."""
    realtime = emulators["realtime"]
    realtime.answer_seconds = 6.0
    realtime.generating_seconds = 8.0   # response.done long after the audio: it is still "being made"
    engine = Engine("openai_realtime", realtime, emulators, speech_grpc, tmp_path, monkeypatch)
    assistant = engine.assistant(section="turn_detection = local\n")
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    barge_at = first_at + len(questions["first"]) / 2 / RATE + 0.6 + 1.5
    leg.say(questions["first"], at=first_at)
    leg.say(questions["second"], at=barge_at)
    leg.hang_up_at(barge_at + 10.0)
    converse(assistant, leg)

    (connection,) = realtime.connections
    update = next(e for e in connection["events"] if e["type"] == "session.update")["session"]
    assert update["audio"]["input"]["turn_detection"] is None
    kinds = [e["type"] for e in connection["events"]]
    assert kinds.count("input_audio_buffer.commit") == 2 and kinds.count("response.create") == 2
    assert connection["questions"] == [QUESTION, SECOND_QUESTION]
    first = spans_of(leg, engine_answer(QUESTION))
    stopped = first[-1][1]
    assert 0.0 < stopped - barge_at < 0.45, (stopped, barge_at)
    (cancel,) = connection["cancels"]
    ((item, end_ms),) = connection["truncates"]
    turns = stored_turns(assistant)
    assert turns[0]["interrupted"] and end_ms == pytest.approx(turns[0]["played_ms"], abs=60)
    assert turns[1]["transcript"] == SECOND_QUESTION
    assert spans_of(leg, engine_answer(SECOND_QUESTION, 2)), "the second question was not answered"
