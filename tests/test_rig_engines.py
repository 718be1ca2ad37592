"""Real-time calls held by a conversation engine on the real Asterisk 22 in the rig: the business's
own AI server over the external-AI WebSocket protocol (harness/emulators/ai_server.py on
loopback), reached by `voiceassist serve` with [live] engine = ai_websocket. The caller plays
spoken questions and records what it hears (every answer is a tone naming its text); when the AI
server fails, the cascade (Google Speech's gRPC stream, Gemini, OpenAI speech: the real SDKs
against the emulators) answers."""

from __future__ import annotations

import pytest

from harness.emulators.openai_api import tone_for
from harness.helpers import rig_conf, streaming_providers
from harness.rig.asterisk import SHARED
from harness.rig.calls import place_call, stored_call, tone_seconds
from harness.servers import FastAGIProcess
from tests.test_rig_live import (HOURS, HOURS_HZ, SUNDAY, SUNDAY_HZ, TRANSPORTS, no_tracebacks, questions,
                                 reply_to)

__all__ = ["questions"]  # the module fixture: the real-time tests' spoken questions


@pytest.fixture(autouse=True)
def _ai_server_state(ai_server, speech_grpc):
    ai_server.transcripts = {HOURS_HZ: HOURS, SUNDAY_HZ: SUNDAY}
    ai_server.answer_seconds = 1.5
    speech_grpc.transcripts.update({HOURS_HZ: HOURS, SUNDAY_HZ: SUNDAY})


@pytest.fixture(scope="module")
def engine_servers(rig, emulators, speech_grpc, ai_server):
    servers = {}
    try:
        for transport, (_, port, live) in TRANSPORTS.items():
            path = SHARED / f"engine-{transport}.conf"
            path.write_text(rig_conf(emulators, extra=f"""{streaming_providers(speech_grpc.endpoint)}
[live]
{live}engine = ai_websocket
still_there_after = 6
goodbye_after = 4
[ai_websocket]
url = {ai_server.url}
token = {ai_server.token}
response_timeout = 3
reconnect = 0
"""))
            servers[transport] = FastAGIProcess(path, port=port)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_ai_server_answers_a_real_time_call(rig, engine_servers, ai_server, questions, transport):
    context = TRANSPORTS[transport][0]
    key = str(8700 + list(TRANSPORTS).index(transport))
    call = place_call(rig, key, [questions["hours"], questions["sunday"]], context=context, listen=5)
    call.wait(timeout=90)
    row, turns = stored_call(key, timeout=30)
    assert [t["transcript"] for t in turns] == [HOURS, SUNDAY], turns
    assert [t["reply"] for t in turns] == [reply_to(HOURS), reply_to(SUNDAY, 2)]
    assert all(t["status"] == "ok" and t["llm_provider"] == "ai_websocket" for t in turns), turns
    assert row["end_state"] == "live-hangup"
    for turn in turns:
        assert tone_seconds(call.heard_path, tone_for(turn["reply"])) == pytest.approx(1.5, abs=0.1)
        assert 0 < turn["speech_to_audio_ms"] < 1500
    session = ai_server.sessions[-1]
    assert session.init["audio_format"] == "g711_ulaw" and session.questions == [HOURS, SUNDAY]
    no_tracebacks(engine_servers[transport])


def test_the_cascade_answers_when_the_ai_server_fails_mid_call(rig, engine_servers, ai_server, emulators, questions):
    ai_server.close_at_question = 2
    context = TRANSPORTS["audiosocket"][0]
    key = "8710"
    call = place_call(rig, key, [questions["hours"], questions["sunday"]], context=context, listen=7)
    call.wait(timeout=90)
    _, turns = stored_call(key, timeout=30)
    assert [t["transcript"] for t in turns] == [HOURS, SUNDAY], turns
    assert [t["llm_provider"] for t in turns] == ["ai_websocket", "gemini"]
    assert tone_seconds(call.heard_path, tone_for(reply_to(HOURS))) == pytest.approx(1.5, abs=0.1)
    # Gemini's answer to the second question, its history the engine's first exchange.
    assert tone_seconds(call.heard_path, tone_for(reply_to(SUNDAY, 2))) > 1.0
    contents = [r.json()["contents"] for r in emulators["gemini"].requests if "generatecontent" in r.path.lower()]
    assert [c["role"] for c in contents[-1]] == ["user", "model", "user"]
    assert reply_to(HOURS) in str(contents[-1][1])
    no_tracebacks(engine_servers["audiosocket"])
