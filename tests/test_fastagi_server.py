"""The FastAGI server with a byte-level fake Asterisk: routing, busy cap, timeouts, SIGTERM drain."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import pytest

from harness.fake_asterisk import FakeAsterisk, asterisk_parse_args, call_recording, fastagi_env
from harness.helpers import config_for
from harness.rig.asterisk import free_port
from harness.servers import FastAGIProcess
from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant
from voiceassist.providers import registry


@pytest.fixture
def server(emulators, tmp_path, request):
    playback = getattr(request, "param", "pipelined")
    assistant = Assistant(config_for(emulators, tmp_path, extra=f"[general]\nplayback = {playback}\n"))
    instance = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=1, read_timeout=10)
    thread = threading.Thread(target=instance.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield instance
    instance.shutdown()
    instance.server_close()


def turn_env(tmp_path, uniqueid="1700000000.1", script="voiceassist"):
    wav = call_recording(tmp_path / "spool/voiceassist", uniqueid)  # the answer_dir of config_for
    return fastagi_env(script, uniqueid, ["turn", str(wav), "NOISE", "1", str(int(time.time())), "8008", uniqueid])


@pytest.mark.parametrize("server", ["file"], indirect=True)
def test_turn_in_file_mode_sets_the_answer_for_the_dialplan_to_play(server, tmp_path):
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path))
    client.run()
    variables = client.variables()
    assert variables["VOICEASSIST_STATUS"] == "ok"
    assert variables["VA_ANSWER"].endswith("1700000000.1/answer-1")
    assert variables["VA_CONTINUE"] == "1"
    assert any(c.startswith('VERBOSE "[LLM] 1700000000.1') for c in client.commands)
    assert not any(c.startswith("STREAM FILE") for c in client.commands)


def test_turn_in_pipelined_mode_plays_each_sentence_itself(server, emulators, tmp_path):
    emulators["gemini"].reply = lambda body: "We open at eight in the morning. We close at six in the evening."
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path))
    client.run()
    streamed = [c for c in client.commands if c.startswith("STREAM FILE")]
    assert [asterisk_parse_args(c)[2].rsplit("/", 1)[1] for c in streamed] == ["answer-1-part1", "answer-1-part2"]
    variables = client.variables()
    assert variables["VOICEASSIST_STATUS"] == "ok" and variables["VA_ANSWER"] == ""
    assert variables["VOICEASSIST_REPLY"] == "We open at eight in the morning. We close at six in the evening."
    # the parts are joined into the turn's one answer file, as in file mode
    answer = tmp_path / "spool/voiceassist/1700000000.1/answer-1.ulaw"
    assert answer.stat().st_size == 2 * 8000 * 1.5
    assert not list(answer.parent.glob("*part*"))


def test_unknown_route_is_answered_with_the_apology(server, tmp_path):
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path, script="nonesuch"))
    client.run()
    assert client.variables()["VA_ANSWER"] == "custom/voiceassist/cant-answer"


def test_calls_beyond_the_cap_hear_the_busy_prompt(server, emulators, tmp_path):
    emulators["gemini"].latency = 1.0
    first = FakeAsterisk(server.server_address[1], turn_env(tmp_path, "1700000000.1"))
    worker = threading.Thread(target=first.run)
    worker.start()
    time.sleep(0.3)
    second = FakeAsterisk(server.server_address[1], turn_env(tmp_path, "1700000000.2"))
    second.run()
    worker.join(10)
    assert second.variables() == {"VA_ANSWER": "custom/voiceassist/busy", "VA_CONTINUE": "0",
                                  "VOICEASSIST_STATUS": "busy"}
    assert first.variables()["VOICEASSIST_STATUS"] == "ok"


def test_silent_client_is_dropped_without_holding_a_thread(server):
    server.environment_timeout = 0.3
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]))
    sock.settimeout(5)
    assert sock.recv(10) == b""  # the server closed it
    sock.close()


def test_provider_clients_are_created_once_and_reused(server, tmp_path, monkeypatch):
    created = []
    real_create = registry.create_named
    monkeypatch.setattr(registry, "create_named",
                        lambda cap, name, cfg, *more: created.append(cap) or real_create(cap, name, cfg, *more))
    for n in range(3):
        FakeAsterisk(server.server_address[1], turn_env(tmp_path, f"1700000001.{n}")).run()
    assert sorted(created) == ["llm", "stt", "tts"]


def test_sigterm_lets_the_call_in_flight_finish(emulators, tmp_path):
    config = config_for(emulators, tmp_path)
    emulators["gemini"].latency = 1.5
    port = free_port()
    process = FastAGIProcess(config.path, port=port)
    client = FakeAsterisk(port, turn_env(tmp_path))
    worker = threading.Thread(target=client.run)
    worker.start()
    time.sleep(0.5)  # the turn is waiting on the chat model
    process.process.send_signal(signal.SIGTERM)
    worker.join(15)
    assert process.wait(timeout=15) == 0
    assert client.variables()["VOICEASSIST_STATUS"] == "ok"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_worker_processes_share_the_port_and_all_drain_on_sigterm(emulators, tmp_path):
    config = config_for(emulators, tmp_path)
    emulators["gemini"].latency = 1.0
    port = free_port()
    # 6 calls per worker: the kernel spreads connections over the workers at random (SO_REUSEPORT
    # hashes each connection), and with 4 per worker 5 of the 6 on one worker got the busy prompt.
    process = FastAGIProcess(config.path, port=port, max_calls=12, workers=2)

    def workers() -> list[str]:
        return subprocess.run(["pgrep", "-P", str(process.process.pid)], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 20  # the server is ready once one worker listens; the other may still be forking
    while len(workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers()) == 2

    def serving_pids() -> set[str]:
        log = tmp_path / "voiceassist.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return {line.split("pid ")[1].rstrip(")") for line in lines if "FastAGI listening" in line}

    deadline = time.monotonic() + 20
    while len(serving_pids()) < 2 and time.monotonic() < deadline:  # both have their SDK clients
        time.sleep(0.1)
    clients = [FakeAsterisk(port, turn_env(tmp_path, f"1700000300.{n}")) for n in range(6)]
    threads = [threading.Thread(target=c.run) for c in clients]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every call is waiting on the chat model
    process.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(20)
    assert process.wait(timeout=20) == 0
    assert [c.variables().get("VOICEASSIST_STATUS") for c in clients] == ["ok"] * 6
    assert len(serving_pids()) == 2


@pytest.mark.parametrize("recorded, stored", [("silence", []), ("speech", [(2, "hangup")])])
def test_a_hang_up_at_the_next_question_is_a_turn_only_if_the_caller_spoke(server, tmp_path, recorded, stored):
    """The h extension after "anything else?": an empty recording is not a question (no phantom
    turn, no "hung up while asking"), one with speech is the question cut short."""
    import wave

    from harness.fake_asterisk import call_recording

    uniqueid = "1700000009.1"
    FakeAsterisk(server.server_address[1], turn_env(tmp_path, uniqueid)).run()
    second = call_recording(tmp_path / "spool/voiceassist", uniqueid, turn=2)
    if recorded == "silence":
        with wave.open(str(second), "wb") as wav:  # what the listener writes when no one speaks
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(b"\0\0" * 800)
    FakeAsterisk(server.server_address[1], fastagi_env("voiceassist", uniqueid, [
        "hangup", "recording", str(second), "2", "8008", uniqueid])).run()
    call, turns = server.assistant.journal().store().call_rows(uniqueid)
    assert [(t["turn_number"], t["status"]) for t in turns] == [(1, "ok"), *stored]
    assert call["end_state"] == "recording" and call["ended_at"] is not None
    assert second.exists() == (recorded == "speech")  # keep_recordings = yes keeps a real question's
