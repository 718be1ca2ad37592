"""Real-time calls on the real Asterisk 22 in the rig, over both media transports: AudioSocket
(``[va-live]``) and Asterisk's WebSocket channel (``[va-live-ws]``). The caller plays spoken
questions and records what it hears (the answer is a tone naming its text); Google Speech's gRPC
stream, Gemini and OpenAI speech are the real SDKs against the emulators."""

from __future__ import annotations

import socket
import time
import uuid
import wave

import numpy as np
import pytest

from harness.emulators import Fail
from harness.emulators.openai_api import tone_for
from harness.helpers import rig_conf, streaming_providers
from harness.rig.asterisk import SHARED
from harness.rig.calls import CALLS_DIR, QUESTIONS_DIR, make_question, place_call, stored_call, tone_seconds
from harness.servers import FastAGIProcess
from harness.speech import tone_spans

TRANSPORTS = {  # rig context, FastAGI port, [live] settings
    "audiosocket": ("va-live", 4579, "transport = audiosocket\naudiosocket_port = 4580\n"),
    "websocket": ("va-live-ws", 4578, "transport = websocket\nwebsocket_port = 4581\nwebsocket_client = voiceassist\n"),
}
AUDIOSOCKET_MEDIA_PORT = 4580
HOURS, HOURS_HZ = "What are your opening hours?", 2200
SUNDAY, SUNDAY_HZ = "Are you open on Sunday?", 2500
PLUMBER, PLUMBER_HZ = "I need a plumber for my kitchen sink", 2800


def reply_to(question: str, turn: int = 1) -> str:
    return f"Answer {turn}: you asked, {question}"


@pytest.fixture(scope="module")
def questions():
    return {"hours": make_question("live-hours", HOURS, HOURS_HZ),
            "sunday": make_question("live-sunday", SUNDAY, SUNDAY_HZ),
            "plumber": make_question("live-plumber", PLUMBER, PLUMBER_HZ)}


@pytest.fixture(scope="module")
def noises(questions):
    """A cough (a 150 ms burst of loud noise), a click, and the answer's own tone at echo level
    (20 dB below what the caller hears), as sounds the caller plays over the answer."""
    QUESTIONS_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    cough = np.concatenate([np.zeros(800), rng.normal(0, 6000, 1200) * np.hanning(1200), np.zeros(800)])
    click = np.concatenate([np.zeros(800), [20000, -20000, 12000], np.zeros(800)])
    t = np.arange(int(1.5 * 8000)) / 8000
    echo = np.sin(2 * np.pi * tone_for(reply_to(HOURS)) * t) * 9000 * 10 ** (-20 / 20)
    names = {}
    for name, samples in (("cough", cough), ("click", click), ("echo", echo)):
        path = QUESTIONS_DIR / f"live-{name}.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
        names[name] = str(path.with_suffix(""))
    return names


@pytest.fixture(scope="module")
def live_servers(rig, emulators, speech_grpc):
    servers = {}
    try:
        for transport, (_, port, live) in TRANSPORTS.items():
            path = SHARED / f"live-{transport}.conf"
            path.write_text(rig_conf(emulators, extra=f"""{streaming_providers(speech_grpc.endpoint)}
[live]
{live}still_there_after = 6
goodbye_after = 4
"""))
            servers[transport] = FastAGIProcess(path, port=port)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(autouse=True)
def _transcripts(speech_grpc):
    speech_grpc.transcripts.update({HOURS_HZ: HOURS, SUNDAY_HZ: SUNDAY, PLUMBER_HZ: PLUMBER})


def db_rows(caller_number: str, timeout: float = 30):
    return stored_call(caller_number, timeout=timeout)


def mixed(call) -> tuple[bytes, int]:
    """Both sides of the call in one timeline (the caller's MixMonitor: what it said and heard)."""
    with wave.open(str(CALLS_DIR / f"{call.key}-heard.wav"), "rb") as wav:
        return wav.readframes(wav.getnframes()), wav.getframerate()


def key_for(test: int, transport: str) -> str:
    return str(test * 10 + list(TRANSPORTS).index(transport))


def no_tracebacks(server: FastAGIProcess) -> None:
    log = (SHARED / "voiceassist.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_real_time_call_is_answered_and_keeps_history(rig, live_servers, emulators, questions, transport):
    context = TRANSPORTS[transport][0]
    key = key_for(810, transport)
    call = place_call(rig, key, [questions["hours"], questions["sunday"]], context=context, listen=5)
    call.wait(timeout=90)
    row, turns = db_rows(key)
    assert [t["transcript"] for t in turns] == [HOURS, SUNDAY], turns
    assert [t["status"] for t in turns] == ["ok", "ok"] and not any(t["interrupted"] for t in turns)
    assert row["uniqueid"] and row["end_state"] == "live-hangup"
    for number, (turn, question) in enumerate(zip(turns, (HOURS, SUNDAY)), start=1):
        assert turn["reply"] == reply_to(question, number)
        assert tone_seconds(call.heard_path, tone_for(turn["reply"])) == pytest.approx(1.5, abs=0.1)
    contents = [r.json()["contents"] for r in emulators["gemini"].requests if "generatecontent" in r.path.lower()]
    assert [c["role"] for c in contents[-1]] == ["user", "model", "user"]
    no_tracebacks(live_servers[transport])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_caller_interrupts_the_answer_and_is_answered(rig, live_servers, emulators, questions, transport):
    emulators["tts"].seconds = 6.0
    context = TRANSPORTS[transport][0]
    key = key_for(811, transport)
    call = place_call(rig, key, [questions["hours"], f"~1~{questions['sunday']}"], context=context, listen=6)
    call.wait(timeout=90)
    row, turns = db_rows(key)
    assert [t["transcript"] for t in turns] == [HOURS, SUNDAY], turns
    # The caller's onset in the mix of both sides; the answer's end in what the caller received
    # alone (in the mix, the caller's louder voice hides the answer's tone under it).
    pcm, rate = mixed(call)
    with wave.open(str(call.heard_path), "rb") as wav:
        received, received_rate = wav.readframes(wav.getnframes()), wav.getframerate()
    answer = tone_spans(received, received_rate, tone_for(reply_to(HOURS)))
    onset = [s for s in tone_spans(pcm, rate, SUNDAY_HZ) if answer and s[0] > answer[0][0]]
    assert answer and onset, (answer, onset)
    reaction = answer[-1][1] - onset[0][0]
    # The caller's voice (its marker tone: loud, steady) stops the answer within 400 ms; the
    # benchmark measures it with speech.
    assert 0 < reaction < 0.4, (reaction, answer, onset)
    assert turns[0]["interrupted"] and turns[0]["status"] == "ok"
    heard = answer[-1][1] - answer[0][0]
    assert turns[0]["played_ms"] / 1000 == pytest.approx(heard, abs=0.15)
    assert turns[0]["heard_reply"] and len(turns[0]["heard_reply"]) < len(turns[0]["reply"])
    assert tone_seconds(call.heard_path, tone_for(reply_to(SUNDAY, 2))) > 1.0, "the second question was not answered"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_false_barge_in_from_silence_a_cough_a_click_or_the_answers_echo(
        rig, live_servers, emulators, questions, noises, transport):
    emulators["tts"].seconds = 5.0
    context = TRANSPORTS[transport][0]
    key = key_for(812, transport)
    over = [f"~0.5~{noises['cough']}", f"~0.3~{noises['click']}", f"~0.2~{noises['echo']}"]
    call = place_call(rig, key, [questions["hours"], *over], context=context, listen=2)
    call.wait(timeout=90)
    _, turns = db_rows(key)
    assert len(turns) == 1 and not turns[0]["interrupted"], turns
    assert tone_seconds(call.heard_path, tone_for(reply_to(HOURS))) == pytest.approx(5.0, abs=0.1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_answer_is_paced_without_gaps_or_speed_change(rig, live_servers, emulators, questions, transport):
    emulators["tts"].seconds = 3.0
    context = TRANSPORTS[transport][0]
    key = key_for(813, transport)
    call = place_call(rig, key, [questions["hours"]], context=context, listen=6)
    call.wait(timeout=90)
    with wave.open(str(call.heard_path), "rb") as wav:
        pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
    spans = tone_spans(pcm, rate, tone_for(reply_to(HOURS)), min_seconds=0.0)
    assert spans, "no answer heard"
    start, end = spans[0][0], spans[-1][1]
    assert end - start == pytest.approx(3.0, abs=0.04), spans
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    assert not gaps or max(gaps) <= 0.04, spans


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_twenty_real_time_calls_at_once_are_each_paced(rig, live_servers, emulators, questions, transport):
    emulators["tts"].seconds = 3.0
    context = TRANSPORTS[transport][0]
    calls = [place_call(rig, key_for(8140 + n, transport), [questions["hours"]], context=context, listen=6,
                        dial=False) for n in range(20)]
    for call in calls:
        call.dial()
    for call in calls:
        call.wait(timeout=150)
    for call in calls:
        with wave.open(str(call.heard_path), "rb") as wav:
            pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
        spans = tone_spans(pcm, rate, tone_for(reply_to(HOURS)), min_seconds=0.0)
        assert spans, f"call {call.key}: no answer heard"
        assert spans[-1][1] - spans[0][0] == pytest.approx(3.0, abs=0.04), (call.key, spans)
        gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        assert not gaps or max(gaps) <= 0.04, (call.key, spans)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_silent_caller_is_asked_then_told_goodbye(rig, live_servers, transport):
    context = TRANSPORTS[transport][0]
    key = key_for(815, transport)
    started = time.monotonic()
    call = place_call(rig, key, [], context=context, listen=40)
    call.wait(timeout=90)
    took = time.monotonic() - started
    row, turns = db_rows(key)
    assert row["end_state"] == "live-silence" and turns == []
    assert took < 30, "the assistant did not end the silent call"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hanging_up_mid_answer_stores_the_turn_as_heard(rig, live_servers, emulators, questions, transport):
    emulators["tts"].seconds = 8.0
    context = TRANSPORTS[transport][0]
    key = key_for(816, transport)
    call = place_call(rig, key, [questions["hours"], "~2~silence"], context=context, listen=0)
    call.wait(timeout=90)
    row, turns = db_rows(key)
    assert len(turns) == 1 and turns[0]["status"] == "ok" and turns[0]["interrupted"], turns
    assert turns[0]["error"] == "caller hung up during the answer"
    assert 500 < turns[0]["played_ms"] < 8000
    assert row["end_state"] == "live-hangup"
    no_tracebacks(live_servers[transport])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failing_model_gets_an_apology_and_the_caller_asks_again(rig, live_servers, emulators, questions, transport):
    emulators["gemini"].script.extend([Fail(500), Fail(500)])  # the first answer and its one retry
    context = TRANSPORTS[transport][0]
    key = key_for(817, transport)
    call = place_call(rig, key, [questions["hours"], questions["sunday"]], context=context, listen=5)
    call.wait(timeout=90)
    _, turns = db_rows(key)
    assert [t["status"] for t in turns] == ["llm_error", "ok"], turns
    assert tone_seconds(call.heard_path, tone_for(reply_to(SUNDAY, 1))) > 1.0


def test_a_stranger_on_the_media_port_cannot_join_or_disturb_a_call(rig, live_servers, questions):
    context = TRANSPORTS["audiosocket"][0]
    key = key_for(818, "audiosocket")
    call = place_call(rig, key, [questions["hours"]], context=context, listen=5)
    # While the call goes on: an unannounced id, then garbage.
    time.sleep(2)
    strangers = []
    for payload in (b"\x01\x00\x10" + uuid.uuid4().bytes, b"\xff\xff\xff" + b"x" * 64):
        sock = socket.create_connection(("127.0.0.1", AUDIOSOCKET_MEDIA_PORT), timeout=5)
        sock.sendall(payload)
        strangers.append(sock)
    for sock in strangers:
        sock.settimeout(5)
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        assert data in (b"", b"\x00\x00\x00"), data  # closed (or told to hang up), never audio
        sock.close()
    call.wait(timeout=90)
    _, turns = db_rows(key)
    assert [t["status"] for t in turns] == ["ok"]
    assert tone_seconds(call.heard_path, tone_for(reply_to(HOURS))) == pytest.approx(1.5, abs=0.1)


def test_a_media_connection_asterisk_drops_while_the_caller_stays_gets_an_apology(rig, live_servers, emulators, questions):
    """Asterisk hangs up the WebSocket channel (the media leg) in the middle of the answer; the
    caller is still there: the dialplan apologises instead of leaving them in silence, and the call
    and its turn are stored."""
    emulators["tts"].seconds = 8.0
    key = key_for(819, "websocket")
    call = place_call(rig, key, [questions["hours"]], context=TRANSPORTS["websocket"][0], listen=15)
    deadline, media = time.monotonic() + 30, ""
    while not media and time.monotonic() < deadline:
        media = next((line.split("!")[0] for line in rig.cli("core show channels concise").splitlines()
                      if line.startswith("WebSocket/")), "")
        time.sleep(0.2)
    assert media, "no WebSocket channel was dialled"
    time.sleep(8)  # greeting, the question, the answer under way
    rig.cli(f"channel request hangup {media}")
    call.wait(timeout=90)
    row, turns = db_rows(key)
    assert row["end_state"] == "live-dropped", row
    assert len(turns) == 1 and turns[0]["transcript"] == HOURS, turns
    assert rig.wait_for_log(rf"Local/{key}@va-test-entry-\w+;2> Playing 'custom/voiceassist/cant-answer")
    no_tracebacks(live_servers["websocket"])
