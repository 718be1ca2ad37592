"""A real-time call held by a conversation engine ([live] engine = ai_websocket): the business's own
AI server over the external-AI WebSocket protocol (harness/emulators/ai_server.py, a real
WebSocket server on loopback), over a phone line simulated in real time (harness/phone_leg.py).
When the engine cannot be reached or fails mid-call, the cascade (the real SDKs against the
emulators) takes the call over. What the caller heard is analysed as audio: every answer is a
tone whose frequency names its text."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from harness.emulators.openai_api import tone_for
from harness.phone_leg import PhoneLeg
from harness.speech import speech_end_seconds, tone_spans
from tests.test_realtime_conversation import (CALL, GREETING_S, MARKER_HZ, QUESTION, RATE, REPO, SECOND_MARKER_HZ,
                                              SECOND_QUESTION, live_assistant, questions, stored_turns)
from voiceassist.audio.prompts import PromptSounds
from voiceassist.call.assistant import Assistant
from voiceassist.call.engine_conversation import EngineConversation, engine_for
from voiceassist.call.realtime import EndReason, LiveOutcome

__all__ = ["questions"]  # the module fixture, shared with the cascade's tests

ONE_MOMENT_S = len((REPO / "sounds/one-moment.ulaw").read_bytes()) / 8000


@pytest.fixture(autouse=True)
def _transcripts(ai_server):
    ai_server.transcripts = {MARKER_HZ: QUESTION, SECOND_MARKER_HZ: SECOND_QUESTION}


def engine_assistant(emulators, speech_grpc, tmp_path, ai_server, extra: str = "") -> Assistant:
    return live_assistant(emulators, speech_grpc, tmp_path, extra=f"""engine = ai_websocket
[ai_websocket]
url = {ai_server.url}
token = test-ai-token
voice = alloy
vad_silence_duration_ms = 400
response_timeout = 3
connect_timeout = 2
reconnect = 0
{extra}""")


def converse(assistant: Assistant, leg: PhoneLeg, timeout: float = 45.0) -> LiveOutcome:
    engine = engine_for(assistant)
    assert engine is not None
    conversation = EngineConversation(leg, assistant, CALL, PromptSounds([REPO / "sounds"]), engine)
    result: list[LiveOutcome] = []
    thread = threading.Thread(target=lambda: result.append(conversation.run()), daemon=True)
    leg.start()
    thread.start()
    thread.join(timeout)
    assert result, "the conversation did not end"
    return result[0]


def engine_answer(question: str, turn: int = 1) -> str:
    return f"Answer {turn}: you asked, {question}"


def ask_twice(questions: dict, hang_up_after: float) -> tuple[PhoneLeg, float, float]:
    """A line on which the caller asks the first question after the greeting and the second 3.5 s
    after the first ends, and hangs up ``hang_up_after`` s after the second began; with the
    times each question began."""
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    second_at = first_at + len(questions["first"]) / 2 / RATE + 3.5
    leg.say(questions["first"], at=first_at)
    leg.say(questions["second"], at=second_at)
    leg.hang_up_at(second_at + hang_up_after)
    return leg, first_at, second_at


def spans_of(leg: PhoneLeg, text: str) -> list[tuple[float, float]]:
    return tone_spans(leg.heard_pcm(), RATE, tone_for(text))


def test_the_ai_server_answers_the_caller_and_both_sides_are_stored(
        emulators, speech_grpc, tmp_path, questions, ai_server):
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg, first_at, second_at = ask_twice(questions, hang_up_after=7.0)
    outcome = converse(assistant, leg)

    assert outcome.reason is EndReason.HANGUP and outcome.turns == 2
    first = spans_of(leg, engine_answer(QUESTION))
    second = spans_of(leg, engine_answer(SECOND_QUESTION, 2))
    assert len(first) == 1 and len(second) == 1, (first, second)
    assert first[0][1] - first[0][0] == pytest.approx(ai_server.answer_seconds, abs=0.06)
    # The server's 400 ms end silence and its 150 ms, then our side: little more.
    speech_end = first_at + speech_end_seconds(questions["first"], RATE)
    assert 0.5 < first[0][0] - speech_end < 0.85, (first[0][0], speech_end)

    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    assert [t["reply"] for t in turns] == [engine_answer(QUESTION), engine_answer(SECOND_QUESTION, 2)]
    assert all(t["status"] == "ok" and not t["interrupted"] for t in turns)
    assert {t["stt_provider"] for t in turns} == {t["llm_provider"] for t in turns} == {"ai_websocket"}
    assert turns[0]["played_ms"] == pytest.approx(2000, abs=40)
    # Measured from the last frame our voice detector found voiced (it keeps a word's quiet tail
    # that the server's level detector does not).
    assert 350 < turns[0]["speech_to_audio_ms"] < 850
    # What the server was told: the protocol's session.init, our token, the system prompt.
    (session,) = ai_server.sessions
    assert session.headers.get("authorization") == "Bearer test-ai-token"
    init = session.init
    assert (init["audio_format"], init["sample_rate"], init["channels"]) == ("g711_ulaw", 8000, 1)
    assert init["voice"] == "alloy" and init["vad_silence_duration_ms"] == 400 and init["vad_enabled"] is True
    assert assistant.config.llm.system_prompt in init["system_prompt"]
    # The caller's audio went on as it came, from the start (over the greeting too): about 8000
    # μ-law bytes a second.
    assert session.audio_bytes > 8000 * (second_at + 5)


def test_a_line_that_sends_nothing_while_the_caller_is_quiet_still_ends_the_question(
        emulators, speech_grpc, tmp_path, questions, ai_server):
    """Silence suppression (and Asterisk's Local channel) stop the frames between words: the
    server is sent the silence the line left out, so its own end-of-speech detection works."""
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg = PhoneLeg(RATE, silence_suppression=True)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + len(questions["first"]) / 2 / RATE + 4.0)
    converse(assistant, leg)
    start = spans_of(leg, engine_answer(QUESTION))[0][0]
    assert 0.5 < start - (asked_at + speech_end_seconds(questions["first"], RATE)) < 0.9
    (turn,) = stored_turns(assistant)
    assert turn["llm_provider"] == "ai_websocket"


def test_the_protocols_second_spelling_is_understood(emulators, speech_grpc, tmp_path, questions, ai_server):
    """ready / transcription {speaker} / audio_chunk {data} / audio_done, and malformed messages
    on the way (not JSON, a list, audio that is not base64, an unknown type) are skipped."""
    ai_server.second_spelling = True
    ai_server.malformed = True
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg = PhoneLeg(RATE)
    leg.say(questions["first"], at=GREETING_S + 0.5)
    leg.hang_up_at(GREETING_S + 0.5 + len(questions["first"]) / 2 / RATE + 4.0)
    outcome = converse(assistant, leg)
    assert outcome.turns == 1
    assert len(spans_of(leg, engine_answer(QUESTION))) == 1
    (turn,) = stored_turns(assistant)
    assert (turn["transcript"], turn["reply"], turn["status"]) == (QUESTION, engine_answer(QUESTION), "ok")


def test_the_servers_barge_in_stops_the_answer_at_once(emulators, speech_grpc, tmp_path, questions, ai_server):
    ai_server.answer_seconds = 6.0
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
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
    # The server counts 200 ms of voice before it says so; the answer stops within the
    # real-time issue's limit (250 ms) of that.
    assert 0.0 < stopped - barge_at < 0.45, (stopped, barge_at)
    (barge_in,) = ai_server.sessions[0].barge_ins
    turns = stored_turns(assistant)
    assert turns[0]["interrupted"] and turns[0]["status"] == "ok"
    assert turns[0]["played_ms"] / 1000 == pytest.approx(stopped - first[0][0], abs=0.1)
    heard_words = turns[0]["heard_reply"].split()
    assert 0 < len(heard_words) < len(turns[0]["reply"].split())
    # The caller's words after the barge-in are the next question, answered in full.
    assert turns[1]["transcript"] == SECOND_QUESTION and not turns[1]["interrupted"]
    assert spans_of(leg, engine_answer(SECOND_QUESTION, 2))
    assert barge_in > 0


@pytest.mark.parametrize("fault", ["refused", "wrong token", "nobody listening"])
def test_an_engine_that_cannot_be_reached_leaves_the_call_to_the_cascade(
        emulators, speech_grpc, tmp_path, questions, ai_server, fault):
    extra = ""
    if fault == "refused":
        ai_server.refuse_status = 503
    elif fault == "wrong token":
        ai_server.token = "another-token"
    else:
        extra = "url = ws://127.0.0.1:9/ai"  # the discard port: nothing listens
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server,
                                 extra=extra)
    leg = PhoneLeg(RATE)
    asked_at = GREETING_S + 0.5
    leg.say(questions["first"], at=asked_at)
    leg.hang_up_at(asked_at + 8.0)
    outcome = converse(assistant, leg)
    assert outcome.turns == 1
    # The cascade's greeting, then its answer (Gemini's reply as OpenAI's voice).
    assert spans_of(leg, engine_answer(QUESTION)), "the cascade did not answer"
    (turn,) = stored_turns(assistant)
    assert turn["stt_provider"] == "google_speech" and turn["llm_provider"] == "gemini"


@pytest.mark.parametrize("fault", ["connection closed", "fatal error", "no answer", "stalled answer"])
def test_an_engine_failing_mid_call_is_followed_by_one_moment_and_the_cascade(
        emulators, speech_grpc, tmp_path, questions, ai_server, fault):
    """The engine answers the first question and fails at the second: the caller hears "one
    moment", then the cascade answers the second question, with the first exchange as history."""
    if fault == "connection closed":
        ai_server.close_at_question = 2
    elif fault == "fatal error":
        ai_server.fatal_at_question = 2
    elif fault == "stalled answer":
        ai_server.stall_at_question = 2
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    second_at = first_at + len(questions["first"]) / 2 / RATE + 3.5
    leg.say(questions["first"], at=first_at)
    if fault == "no answer":
        # The server goes quiet after its first answer.
        threading.Timer(second_at - 0.5, lambda: setattr(ai_server, "silent", True)).start()
    leg.say(questions["second"], at=second_at)
    leg.hang_up_at(second_at + 14.0)
    outcome = converse(assistant, leg)

    assert spans_of(leg, engine_answer(QUESTION)), "the engine's first answer was not heard"
    marks = [name for name, _ in leg.marks_fired]
    assert any("one-moment" in m for m in marks), marks
    # The cascade's answer: Gemini's reply to the second question, its second user message.
    assert spans_of(leg, engine_answer(SECOND_QUESTION, 2)), "the cascade did not answer"
    turns = stored_turns(assistant)
    if fault == "stalled answer":
        # The 0.4 s the caller heard of the engine's answer is a turn of its own, cut short.
        broken = turns.pop(1)
        assert broken["interrupted"] and "engine failed" in broken["error"]
        assert broken["transcript"] == SECOND_QUESTION and broken["played_ms"] == pytest.approx(400, abs=40)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    assert turns[0]["llm_provider"] == "ai_websocket" and turns[1]["llm_provider"] == "gemini"
    assert outcome.turns == (3 if fault == "stalled answer" else 2)
    generate = [r for r in emulators["gemini"].requests if "generatecontent" in r.path.lower()]
    contents = generate[-1].json()["contents"]
    # The history is what the caller heard: with a stalled answer, also its first words.
    roles = ["user", "model"] * (2 if fault == "stalled answer" else 1) + ["user"]
    assert [c["role"] for c in contents] == roles
    assert engine_answer(QUESTION) in str(contents[1])


def test_the_caller_hears_our_greeting_and_may_talk_over_it(emulators, speech_grpc, tmp_path, questions, ai_server):
    """The greeting plays at once; the caller asks over it: the server's speech_started stops it,
    and the question is answered."""
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg = PhoneLeg(RATE)
    leg.say(questions["first"], at=1.0)
    leg.hang_up_at(1.0 + len(questions["first"]) / 2 / RATE + 4.0)
    converse(assistant, leg)
    heard = np.frombuffer(leg.heard_pcm(), dtype="<i2").astype(np.float64)
    level = lambda start, end: float(np.abs(heard[int(start * RATE):int(end * RATE)]).mean())  # noqa: E731
    assert level(0.2, 0.9) > 300, "the greeting was not heard"
    # The marker tone and voice start at 1.0 s; 200 ms later the server says so: quiet from then
    # until the answer (the greeting alone would have gone on to 3.3 s).
    assert level(1.7, 3.2) < 30
    assert spans_of(leg, engine_answer(QUESTION))
    (turn,) = stored_turns(assistant)
    assert turn["transcript"] == QUESTION


def test_pound_ends_a_call_with_the_engine_politely(emulators, speech_grpc, tmp_path, questions, ai_server):
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg = PhoneLeg(RATE)
    leg.press("#", at=1.0)
    outcome = converse(assistant, leg, timeout=20)
    assert outcome.reason is EndReason.CALLER_ENDED
    assert leg.hung_up_by_us.is_set()


def test_a_token_is_never_sent_unencrypted_to_another_machine(emulators, speech_grpc, tmp_path, ai_server):
    from voiceassist.errors import ConfigError
    from voiceassist.providers import registry

    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server, extra="url = ws://192.0.2.7:8765/ws")
    with pytest.raises(ConfigError, match="wss://"):
        registry.create_named("engine", "ai_websocket", assistant.config)
    # A call on this configuration is still answered: by the cascade.
    assert engine_for(assistant) is None


def test_an_engine_without_an_address_leaves_calls_to_the_cascade(emulators, speech_grpc, tmp_path, caplog):
    assistant = live_assistant(emulators, speech_grpc, tmp_path, extra="engine = ai_websocket")
    assert engine_for(assistant) is None
    assert "[ai_websocket] url is empty" in caplog.text


def raw_server(handler):
    """A WebSocket server on loopback whose every connection runs ``handler``."""
    from websockets.sync.server import serve

    server = serve(handler, "127.0.0.1", 0, compression=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def session_on(server, tmp_path, emulators, speech_grpc):
    from voiceassist.providers import registry

    url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ai"
    assistant = live_assistant(emulators, speech_grpc, tmp_path, extra=f"engine = ai_websocket\n[ai_websocket]\nurl = {url}")
    return registry.create_named("engine", "ai_websocket", assistant.config).open("Be brief.", [])


def events_until_fatal(session, seconds: float = 5.0):
    import time

    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = session.next_event(0.1)
        if event is not None:
            seen.append(event)
            if event.fatal:
                break
    return seen


@pytest.mark.parametrize("flood", ["one huge message", "endless small messages"])
def test_a_server_that_floods_the_call_is_cut_off_as_failed(emulators, speech_grpc, tmp_path, flood):
    import json

    def handler(connection):
        connection.recv()  # session.init
        connection.send(json.dumps({"type": "session_started"}))
        if flood == "one huge message":
            connection.send(json.dumps({"type": "transcript", "role": "assistant", "text": "x" * (2 << 20)}))
        else:
            for _ in range(5000):
                connection.send(json.dumps({"type": "transcript", "role": "assistant", "text": "more"}))
        connection.recv()

    server = raw_server(handler)
    try:
        session = session_on(server, tmp_path, emulators, speech_grpc)
        if flood == "endless small messages":
            import time
            time.sleep(1.0)  # the call is busy: nothing taken meanwhile
        seen = events_until_fatal(session)
        session.close()
    finally:
        server.shutdown()
    assert seen and seen[-1].fatal, seen[-3:]
    assert len(seen) <= 2002


def test_a_server_that_keeps_talking_but_never_starts_the_session_times_out(emulators, speech_grpc, tmp_path):
    import json
    import time

    from voiceassist.errors import ProviderTimeout

    def handler(connection):
        connection.recv()
        for _ in range(20):
            connection.send(json.dumps({"type": "heartbeat"}))
            time.sleep(0.3)

    server = raw_server(handler)
    try:
        started = time.monotonic()
        with pytest.raises(ProviderTimeout):
            session_on(server, tmp_path, emulators, speech_grpc)
        assert time.monotonic() - started < 5.0 + 1.5  # the connect_timeout, not reset by each message
    finally:
        server.shutdown()


def test_a_non_fatal_error_is_logged_and_the_session_goes_on(emulators, speech_grpc, tmp_path, caplog):
    import json

    def handler(connection):
        connection.recv()
        connection.send(json.dumps({"type": "ready"}))
        connection.send(json.dumps({"type": "error", "message": "rate limited, retrying", "fatal": False}))
        connection.send(json.dumps({"type": "transcript", "role": "agent", "text": "Still here."}))
        connection.send(json.dumps({"type": "audio_done"}))
        connection.recv()

    server = raw_server(handler)
    try:
        session = session_on(server, tmp_path, emulators, speech_grpc)
        import time
        seen = []
        deadline = time.monotonic() + 3
        while len(seen) < 3 and time.monotonic() < deadline:
            if (event := session.next_event(0.1)) is not None:
                seen.append(event)
        session.close()
    finally:
        server.shutdown()
    assert [e.kind.value for e in seen] == ["error", "assistant_said", "done"]
    assert not seen[0].fatal and seen[1].text == "Still here."


def test_a_session_that_fails_mid_call_is_opened_again_with_the_call_so_far(
        emulators, speech_grpc, tmp_path, questions, ai_server):
    """[ai_websocket] reconnect = 1: the connection closes as the second question ends; a new
    session is told the first exchange and hears the unanswered question again (the caller's
    audio, kept: the server never said what it heard), and answers it. No "one moment", no cascade."""
    ai_server.close_at_question = 2
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server, extra="reconnect = 1")
    leg, first_at, second_at = ask_twice(questions, hang_up_after=9.0)
    outcome = converse(assistant, leg)

    assert outcome.turns == 2
    assert spans_of(leg, engine_answer(QUESTION))
    # The new session's first answer.
    assert spans_of(leg, engine_answer(SECOND_QUESTION, 1)), "the new session did not answer"
    assert not any("one-moment" in name for name, _ in leg.marks_fired)
    first, second = ai_server.sessions
    assert first.questions == [QUESTION, SECOND_QUESTION] and second.questions == [SECOND_QUESTION]
    said_so_far = second.init["system_prompt"].split("The conversation so far:")[1]
    assert QUESTION in said_so_far and engine_answer(QUESTION) in said_so_far
    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    assert {t["llm_provider"] for t in turns} == {"ai_websocket"}



KEYS = """[destinations]
reception = from-internal,200,1 | The front desk
[actions]
operator = reception
"""


def test_the_operator_key_transfers_even_when_the_engine_says_nothing(
        emulators, speech_grpc, tmp_path, questions, ai_server):
    """Key 0 ([actions] key_operator): the transfer to the operator is decided by voiceassist; the
    engine is asked to tell the caller (this server ignores text), and within response_timeout
    the call goes on to the dialplan anyway."""
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server, extra=KEYS)
    leg = PhoneLeg(RATE)
    leg.press("0", at=GREETING_S + 0.5)
    outcome = converse(assistant, leg, timeout=20)
    assert outcome.reason is EndReason.TRANSFER and outcome.action is not None
    assert outcome.action.target == "from-internal,200,1"
    assert ai_server.sessions[0].texts == ["(The caller pressed the operator key. Tell them only this: "
                                           "Transferring you to reception.)"]
    (turn,) = stored_turns(assistant)
    assert (turn["transcript"], turn["reply"], turn["action"]) == ("[key 0]", "Transferring you to reception.",
                                                                   "transfer")


def test_the_repeat_key_plays_the_last_answer_again_and_skip_stops_one(
        emulators, speech_grpc, tmp_path, questions, ai_server):
    ai_server.answer_seconds = 3.0
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg = PhoneLeg(RATE)
    first_at = GREETING_S + 0.5
    first_end = first_at + len(questions["first"]) / 2 / RATE
    leg.say(questions["first"], at=first_at)
    repeat_at = first_end + 0.6 + 3.5
    leg.press("*", at=repeat_at)           # the whole first answer again
    skip_at = repeat_at + 1.0
    leg.press("#", at=skip_at)             # the repeat is cut short; the call goes on
    leg.hang_up_at(skip_at + 3.0)
    outcome = converse(assistant, leg)
    assert outcome.reason is EndReason.HANGUP
    spans = spans_of(leg, engine_answer(QUESTION))
    assert len(spans) == 2, spans
    assert spans[0][1] - spans[0][0] == pytest.approx(3.0, abs=0.08)
    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, "[key *]"]
    assert turns[1]["reply"] == engine_answer(QUESTION) and turns[1]["llm_provider"] == "keys"


def test_words_that_come_after_the_answer_has_played_are_stored_with_it(
        emulators, speech_grpc, tmp_path, questions, ai_server):
    """The protocol does not order transcripts before response_complete: a server that sends both
    sides' words only once its answer has played still gets them stored with that turn."""
    ai_server.late_transcripts = True
    assistant = engine_assistant(emulators, speech_grpc, tmp_path, ai_server)
    leg, first_at, second_at = ask_twice(questions, hang_up_after=7.0)
    outcome = converse(assistant, leg)
    assert outcome.turns == 2
    turns = stored_turns(assistant)
    assert [t["transcript"] for t in turns] == [QUESTION, SECOND_QUESTION]
    assert [t["reply"] for t in turns] == [engine_answer(QUESTION), engine_answer(SECOND_QUESTION, 2)]
