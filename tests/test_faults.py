"""Faults around a turn: hostile or broken FastAGI clients, ffmpeg missing or failing, a full disk.

Each: the caller hears a prompt (or the call goes on in the dialplan), the turn is stored, and the
server keeps serving the next caller without leaking a thread.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
from harness.helpers import config_for
from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant


@pytest.fixture
def make_server(emulators, tmp_path):
    servers = []

    def start(extra: str = "", environment_timeout: float = 2.0) -> FastAGIServer:
        assistant = Assistant(config_for(emulators, tmp_path, extra=extra))
        instance = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=5, read_timeout=5)
        instance.environment_timeout = environment_timeout
        thread = threading.Thread(target=instance.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append(instance)
        return instance

    yield start
    for instance in servers:
        instance.shutdown()
        instance.server_close()


def turn_env(tmp_path, uniqueid: str, answer_dir=None) -> bytes:
    wav = call_recording(answer_dir or tmp_path / "spool/voiceassist", uniqueid)  # as the dialplan records it
    return fastagi_env("voiceassist", uniqueid, ["turn", str(wav), "NOISE", "1", str(int(time.time())), "8008",
                                                 uniqueid])


def stored_turn(tmp_path, uniqueid: str) -> dict:
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT t.* FROM voiceassist_turns t JOIN voiceassist_calls c ON c.id = t.call_id "
                         "WHERE c.uniqueid = ?", (uniqueid,)).fetchone()
    assert row is not None, f"turn of {uniqueid} not stored"
    return dict(row)


def handler_threads() -> int:
    """Threads serving a FastAGI connection (not the emulators' HTTP threads)."""
    return sum(1 for t in threading.enumerate()
               if isinstance(getattr(getattr(t, "_target", None), "__self__", None), FastAGIServer))


def wait_for_idle_threads(baseline: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while handler_threads() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return handler_threads()


def still_serves(server: FastAGIServer, tmp_path, uniqueid: str = "1700000099.1") -> None:
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path, uniqueid))
    client.run()
    assert client.variables()["VOICEASSIST_STATUS"] == "ok"


def test_endless_environment_block_is_cut_off_at_a_limit(make_server, tmp_path):
    server = make_server()
    baseline = handler_threads()
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    sent = 0
    started = time.monotonic()
    with pytest.raises(OSError):  # the server closes the connection: our writes fail
        while sent < 50_000_000:
            sock.sendall(b"agi_x: " + b"y" * 100 + b"\n")
            sent += 108
    sock.close()
    # The server stops at 128 KiB; the rest is what the kernel's socket buffers took meanwhile.
    assert sent < 10_000_000 and time.monotonic() - started < 5, (sent, time.monotonic() - started)
    assert wait_for_idle_threads(baseline) == baseline
    still_serves(server, tmp_path)


def test_trickled_environment_is_dropped_at_the_deadline(make_server, tmp_path):
    """One line per second never trips the per-read timeout; the whole block has a deadline."""
    server = make_server(environment_timeout=1.5)
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=15)
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 12:
        try:
            sock.sendall(b"agi_channel: PJSIP/1\n")
            sock.settimeout(0.5)
            if sock.recv(1) == b"":
                closed = True
                break
        except socket.timeout:
            continue
        except OSError:
            closed = True
            break
    sock.close()
    assert closed and time.monotonic() - started < 8


def test_a_one_megabyte_line_is_refused_without_reading_it_all(make_server, tmp_path):
    server = make_server()
    baseline = handler_threads()
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    try:
        sock.sendall(b"agi_network: yes\nagi_callerid: " + b"9" * 1_000_000 + b"\n\n")
    except OSError:
        pass  # closed while we were still sending: fine
    sock.settimeout(10)
    try:
        assert sock.recv(100) == b""
    except ConnectionResetError:
        pass
    sock.close()
    assert wait_for_idle_threads(baseline) == baseline
    still_serves(server, tmp_path)


def test_asterisk_closing_the_socket_mid_command_still_stores_the_turn(make_server, emulators, tmp_path):
    """The caller hung up and Asterisk dropped the connection while we waited for a reply."""
    server = make_server("[general]\nplayback = pipelined\n")
    baseline = handler_threads()
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=20)
    sock.sendall(turn_env(tmp_path, "1700000050.1"))
    reader = sock.makefile("rb")
    first = reader.readline()  # the first command of the turn: never answered
    assert first
    reader.close()
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            turn = stored_turn(tmp_path, "1700000050.1")
            break
        except (AssertionError, sqlite3.OperationalError):
            time.sleep(0.1)
    else:
        raise AssertionError("the turn of the dropped connection was not stored")
    assert turn["transcript"]  # what the caller asked is kept
    assert wait_for_idle_threads(baseline) == baseline
    still_serves(server, tmp_path)


@pytest.mark.parametrize("ffmpeg", ["/nonexistent/ffmpeg", "/bin/false"], ids=["missing", "failing"])
def test_ffmpeg_missing_or_failing_gives_the_apology_and_a_stored_error(make_server, tmp_path, ffmpeg):
    server = make_server(f"[general]\nplayback = file\n[audio]\nconverter = ffmpeg\nffmpeg = {ffmpeg}\n")
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path, "1700000060.1"))
    client.run()
    variables = client.variables()
    assert variables["VOICEASSIST_STATUS"] != "ok"
    assert variables["VA_ANSWER"].endswith("cant-answer")
    turn = stored_turn(tmp_path, "1700000060.1")
    assert turn["status"] != "ok" and "ffmpeg" in turn["error"]
    assert turn["reply"], "the model's reply is kept even though it could not be spoken"


@pytest.mark.skipif(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
                    reason="mounts a tiny tmpfs (root)")
def test_full_disk_for_the_answer_gives_the_apology_and_the_turn_is_stored(make_server, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        env = turn_env(tmp_path, "1700000070.1", answer_dir=full)  # the question is recorded, then the disk fills
        subprocess.run(["dd", "if=/dev/zero", f"of={full}/filler", "bs=4k", "count=100"], capture_output=True)
        server = make_server(f"[general]\nplayback = file\nanswer_dir = {full}\n")
        client = FakeAsterisk(server.server_address[1], env)
        client.run()
        variables = client.variables()
        assert variables["VA_ANSWER"].endswith("cant-answer")
        turn = stored_turn(tmp_path, "1700000070.1")
        assert turn["status"] != "ok" and "space" in turn["error"].lower(), turn["error"]
        assert turn["transcript"] and turn["reply"]
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


class FillsTheDiskWhilePlaying(FakeAsterisk):
    """Asterisk playing the first sentence while the disk fills up behind it."""

    def __init__(self, port: int, env: bytes, disk) -> None:
        super().__init__(port, env)
        self.disk = disk

    def run(self) -> list[str]:
        for raw in self.file:
            line = raw.decode().rstrip("\n")
            self.commands.append(line)
            if line.startswith("STREAM FILE") and not (self.disk / "filler").exists():
                subprocess.run(["dd", "if=/dev/zero", f"of={self.disk}/filler", "bs=4k", "count=1000"],
                               capture_output=True)
            self.sock.sendall(b"200 result=1\n")
        self.file.close()
        self.sock.close()
        return self.commands


@pytest.mark.skipif(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
                    reason="mounts a tiny tmpfs (root)")
def test_a_disk_that_fills_during_a_pipelined_answer_is_not_followed_by_an_apology(make_server, emulators, tmp_path):
    """The caller heard the first sentence: the turn is a success cut short, with no apology after
    the answer, and no part file or half-written join is left on the disk."""
    disk = tmp_path / "filling"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        uniqueid = "1700000080.1"
        wav = call_recording(disk, uniqueid)
        emulators["gemini"].reply = lambda body: "We open at eight in the morning. We close at six in the evening."
        emulators["tts"].latency = 0.5  # the second sentence is still being synthesized when the disk fills
        server = make_server(f"[general]\nplayback = pipelined\nanswer_dir = {disk}\n")
        env = fastagi_env("voiceassist", uniqueid, ["turn", str(wav), "NOISE", "1", str(int(time.time())), "8008",
                                                    uniqueid])
        client = FillsTheDiskWhilePlaying(server.server_address[1], env, disk)
        client.run()
        variables = client.variables()
        assert len([c for c in client.commands if c.startswith("STREAM FILE")]) == 1
        assert variables["VOICEASSIST_STATUS"] == "ok" and variables["VA_ANSWER"] == "", variables
        turn = stored_turn(tmp_path, uniqueid)
        assert turn["status"] == "ok" and turn["answer_path"] is None
        assert "answer cut short after 1 sentences" in turn["error"] and "answer audio not kept" in turn["error"]
        assert sorted(p.name for p in (disk / uniqueid).iterdir()) == ["question-1.wav"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
