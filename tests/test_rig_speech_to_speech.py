"""Real-time calls held by a speech-to-speech model on the real Asterisk 22 in the rig: `voiceassist
serve` with [live] engine = openai_realtime (the openai SDK's WebSocket client against the
Realtime API emulator) over AudioSocket, and engine = gemini_live (google-genai over TLS against
the Live API emulator, 16/24 kHz resampled to the line's 8 kHz) over chan_websocket. The caller
plays spoken questions and records what it hears (every answer is a tone naming its text)."""

from __future__ import annotations

import os

import pytest

from harness.emulators.openai_api import tone_for
from harness.helpers import rig_conf, streaming_providers
from harness.rig.asterisk import SHARED
from harness.rig.calls import place_call, stored_call, tone_seconds
from harness.servers import FastAGIProcess
from tests.test_rig_live import HOURS, HOURS_HZ, SUNDAY, SUNDAY_HZ, TRANSPORTS, no_tracebacks, questions, reply_to

__all__ = ["questions"]  # the module fixture: the real-time tests' spoken questions

ENGINES = {"audiosocket": "openai_realtime", "websocket": "gemini_live"}


@pytest.fixture(autouse=True)
def _emulator_state(emulators, gemini_live, speech_grpc):
    for emulator in (emulators["realtime"], gemini_live):
        emulator.transcripts = {HOURS_HZ: HOURS, SUNDAY_HZ: SUNDAY}
        emulator.answer_seconds = 1.5
    speech_grpc.transcripts.update({HOURS_HZ: HOURS, SUNDAY_HZ: SUNDAY})


@pytest.fixture(scope="module")
def model_servers(rig, emulators, speech_grpc, gemini_live):
    # The serve processes inherit it: google-genai always connects over TLS, and trusts the
    # emulator's certificate this way.
    previous = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = gemini_live.ca_file
    servers = {}
    try:
        for transport, (_, port, live) in TRANSPORTS.items():
            path = SHARED / f"speech-to-speech-{transport}.conf"
            path.write_text(rig_conf(emulators, extra=f"""{streaming_providers(speech_grpc.endpoint)}
[live]
{live}engine = {ENGINES[transport]}
still_there_after = 6
goodbye_after = 4
[openai_realtime]
base_url = {emulators["realtime"].base_url}
response_timeout = 3
[gemini_live]
base_url = {gemini_live.base_url}
api_key = {gemini_live.api_key}
response_timeout = 3
"""))
            servers[transport] = FastAGIProcess(path, port=port)
        yield servers
    finally:
        for server in servers.values():
            server.stop()
        if previous is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = previous


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_speech_to_speech_model_answers_a_real_time_call(rig, model_servers, emulators, gemini_live, questions,
                                                           transport):
    engine = ENGINES[transport]
    context = TRANSPORTS[transport][0]
    key = str(8720 + list(TRANSPORTS).index(transport))
    call = place_call(rig, key, [questions["hours"], questions["sunday"]], context=context, listen=5)
    call.wait(timeout=90)
    row, turns = stored_call(key, timeout=30)
    assert [t["transcript"] for t in turns] == [HOURS, SUNDAY], turns
    assert [t["reply"] for t in turns] == [reply_to(HOURS), reply_to(SUNDAY, 2)]
    assert all(t["status"] == "ok" and t["llm_provider"] == engine for t in turns), turns
    assert row["end_state"] == "live-hangup"
    for turn in turns:
        # The whole answer reached the caller through Asterisk (Gemini's brought down from 24 kHz).
        assert tone_seconds(call.heard_path, tone_for(turn["reply"])) == pytest.approx(1.5, abs=0.1)
        assert 0 < turn["speech_to_audio_ms"] < 1500
    if engine == "openai_realtime":
        assert emulators["realtime"].connections[-1]["questions"] == [HOURS, SUNDAY]
    else:
        assert gemini_live.sessions[-1].questions == [HOURS, SUNDAY]
    no_tracebacks(model_servers[transport])
