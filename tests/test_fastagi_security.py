"""FastAGI serves only the PBX: allowed peers, the shared secret, slow and many clients.

The server runs for real (in a thread, or as `voiceassist serve`), the client speaks FastAGI at
byte level from chosen loopback addresses (127.0.0.2 is loopback too, but another peer).
"""

from __future__ import annotations

import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
from harness.helpers import config_for, voiceassist_log
from harness.rig.asterisk import free_port
from harness.servers import FastAGIProcess
from voiceassist.asterisk.access import RefusalLog, check_exposure, is_allowed, parse_allow, secret_matches
from voiceassist.asterisk.dialplan import fastagi_url
from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant
from voiceassist.config import load_config
from voiceassist.errors import ConfigError

SECRET = "s3cret/with&odd=chars+ü"


@pytest.fixture
def make_server(emulators, tmp_path):
    servers = []

    def start(extra: str = "", host: str = "127.0.0.1", max_calls: int = 2) -> FastAGIServer:
        assistant = Assistant(config_for(emulators, tmp_path, extra=extra))
        instance = FastAGIServer((host, 0), assistant, max_calls=max_calls, read_timeout=10)
        thread = threading.Thread(target=instance.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append(instance)
        return instance

    yield start
    for instance in servers:
        instance.shutdown()
        instance.server_close()


def turn_env(tmp_path, uniqueid: str = "1700000000.1", script: str = "voiceassist") -> bytes:
    wav = call_recording(tmp_path / "spool/voiceassist", uniqueid)
    return fastagi_env(script, uniqueid, ["turn", str(wav), "NOISE", "1", str(int(time.time())), "8008", uniqueid])


def exchange(port: int, env: bytes | None, source: str = "127.0.0.1", timeout: float = 10) -> tuple[bytes, float]:
    """Connect from ``source``, send ``env`` (None: nothing), answer nothing; return everything
    the server sent until it closed, and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        if env is not None:
            sock.sendall(env)
        received = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


def log_text(tmp_path) -> str:
    """The log file of a `voiceassist serve` process started by the test."""
    path = tmp_path / "voiceassist.log"
    return path.read_text() if path.exists() else ""


@pytest.fixture
def server_log():
    with voiceassist_log() as text:
        yield text


# -- who may connect -----------------------------------------------------------------------------
def test_a_peer_outside_allow_is_closed_before_its_environment_is_read(make_server, emulators, tmp_path, server_log):
    server = make_server()  # allow: the default, 127.0.0.1 and ::1
    received, seconds = exchange(server.server_address[1], None, source="127.0.0.2")
    # Closed at once without waiting for (or reading) an environment block, no thread started.
    assert received == b"" and seconds < 1.0
    assert server.open_connections == 0
    # With a complete block it is the same: nothing said, nothing run.
    received, _ = exchange(server.server_address[1], turn_env(tmp_path), source="127.0.0.2")
    assert received == b""
    assert emulators["speech"].requests == []
    assert "refused 127.0.0.2: not in [fastagi] allow" in server_log()
    # The same client from an allowed address is served.
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path, "1700000000.2"), source="127.0.0.1")
    client.run()
    assert client.variables()["VOICEASSIST_STATUS"] == "ok"


def test_an_allowed_network_admits_its_peers(make_server, tmp_path):
    server = make_server("[fastagi]\nallow = 127.0.0.0/30, ::1\n")
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path), source="127.0.0.2")
    client.run()
    assert client.variables()["VOICEASSIST_STATUS"] == "ok"
    received, _ = exchange(server.server_address[1], None, source="127.0.0.9")
    assert received == b""


def test_an_ipv4_peer_on_a_dual_stack_socket_matches_its_ipv4_entry(make_server, tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = make_server(host="::")
    except OSError as exc:
        pytest.skip(f"cannot bind [::]: {exc}")
    # The peer address is ::ffff:127.0.0.1 on this socket; allow says 127.0.0.1.
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path), source="127.0.0.1")
    client.run()
    assert client.variables()["VOICEASSIST_STATUS"] == "ok"
    assert exchange(server.server_address[1], None, source="127.0.0.2")[0] == b""


def test_allow_entries_and_peers_are_parsed_with_ipaddress():
    networks = parse_allow("127.0.0.1, ::1 10.0.0.0/8,::ffff:192.168.1.0/120")
    assert is_allowed("127.0.0.1", networks) and is_allowed("::ffff:127.0.0.1", networks)
    assert is_allowed("10.200.3.4", networks) and is_allowed("::ffff:192.168.1.77", networks)
    assert is_allowed("192.168.1.77", networks) and is_allowed("::1", networks)
    assert not is_allowed("127.0.0.2", networks) and not is_allowed("::2", networks)
    assert not is_allowed("not an address", networks)
    for bad in ("", "127.0.0.300", "localhost", "10.0.0.0/33"):
        with pytest.raises(ConfigError, match="allow"):
            parse_allow(bad)


# -- the shared secret ---------------------------------------------------------------------------
def test_the_secret_round_trips_through_the_dialplan_url():
    config = load_config(environ={}, overrides={"fastagi": {"secret": SECRET}})
    url = fastagi_url(config)
    script = url.split("/", 3)[3]  # what Asterisk sends as agi_network_script (checked on the rig)
    assert secret_matches(script, SECRET)
    assert not secret_matches(script.replace("s3cret", "s3creT"), SECRET)
    assert not secret_matches("voiceassist", SECRET) and not secret_matches("voiceassist?secret=", SECRET)
    assert not secret_matches(f"{script}&secret=x", SECRET)  # two of them: refused


@pytest.mark.parametrize("script", ["voiceassist", "voiceassist?secret=wrong", "voiceassist?secret=",
                                    "voiceassist?other=s3cret", "nonesuch"], ids=["missing", "wrong", "empty",
                                                                                  "other name", "no route"])
def test_a_missing_or_wrong_secret_is_refused_before_any_work(make_server, emulators, tmp_path, script, server_log):
    server = make_server(f"[fastagi]\nsecret = {SECRET}\n")
    received, seconds = exchange(server.server_address[1], turn_env(tmp_path, script=script))
    # Asterisk's own FAILURE line (AGISTATUS=FAILURE: the dialplan plays the apology), nothing else:
    # no VERBOSE, no variable, no route names.
    assert received == b"FAILURE\n" and seconds < 3
    assert emulators["speech"].requests == [] and emulators["gemini"].requests == []
    assert "wrong or missing secret" in server_log()
    assert SECRET not in server_log()


def test_the_right_secret_is_served(make_server, tmp_path):
    server = make_server(f"[fastagi]\nsecret = {SECRET}\n")
    config = load_config(tmp_path / "voiceassist.conf", environ={})
    script = fastagi_url(config).split("/", 3)[3]
    client = FakeAsterisk(server.server_address[1], turn_env(tmp_path, script=script))
    client.run()
    assert client.variables()["VOICEASSIST_STATUS"] == "ok"


def test_refusals_are_logged_once_per_peer_per_minute(make_server, tmp_path, server_log):
    server = make_server()
    for _ in range(5):
        exchange(server.server_address[1], None, source="127.0.0.3")
    exchange(server.server_address[1], None, source="127.0.0.4")
    log = server_log()
    assert log.count("refused 127.0.0.3") == 1 and log.count("refused 127.0.0.4") == 1
    # The next line for that peer, a minute later, says how many were left out.
    refusals = RefusalLog()
    refusals._logged["127.0.0.3"] = time.monotonic() - 61
    refusals._suppressed["127.0.0.3"] = 4
    refusals("127.0.0.3", "not in [fastagi] allow")
    assert "4 more from it in the last minute" in server_log()


def test_a_refusal_log_cannot_grow_without_bound():
    refusals = RefusalLog()
    for n in range(5000):
        refusals(f"127.0.{n // 250}.{n % 250}", "not allowed")
    assert len(refusals._logged) <= 50 and refusals._suppressed_elsewhere == 5000 - 50


# -- binding beyond loopback ---------------------------------------------------------------------
def test_exposure_check_allows_loopback_or_a_protected_public_bind():
    loopback_only = parse_allow("127.0.0.1, ::1")
    check_exposure("127.0.0.1", loopback_only, "")
    check_exposure("::1", loopback_only, "")
    check_exposure("0.0.0.0", loopback_only, "a secret")
    check_exposure("0.0.0.0", parse_allow("192.0.2.10"), "")
    for host in ("0.0.0.0", "::", "", "192.0.2.1"):
        with pytest.raises(ConfigError, match="refusing to listen"):
            check_exposure(host, loopback_only, "")


def test_serve_refuses_a_public_bind_with_one_line_and_exit_2(emulators, tmp_path):
    config = config_for(emulators, tmp_path)
    out = subprocess.run([sys.executable, "-m", "voiceassist", "--config", str(config.path), "serve",
                          "--host", "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "refusing to listen on 0.0.0.0" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_serve_binds_a_public_address_when_a_secret_protects_it(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra=f"[fastagi]\nsecret = {SECRET}\nhost = 0.0.0.0\n")
    server = FastAGIProcess(config.path, port=free_port())
    assert server.stop() == 0


# -- slow, silent and many clients -----------------------------------------------------------------
def trickle(port: int, data: bytes, every: float, stop: threading.Event) -> tuple[bool, float]:
    """Send ``data`` one byte every ``every`` seconds; (closed by the server, seconds until then)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.settimeout(every)
        for byte in data:
            if stop.is_set():
                break
            try:
                sock.send(bytes([byte]))
                if sock.recv(1) == b"":
                    return True, time.monotonic() - started
            except socket.timeout:
                continue
            except OSError:
                return True, time.monotonic() - started
    return False, time.monotonic() - started


def test_a_trickling_client_is_cut_at_the_environment_deadline(make_server, tmp_path):
    server = make_server()
    server.environment_timeout = 2.0
    # A valid block, one byte every 0.3 s: no single read ever waits long; the whole would take minutes.
    closed, seconds = trickle(server.server_address[1], turn_env(tmp_path), 0.3, threading.Event())
    assert closed and 1.9 < seconds < 3.0, seconds
    deadline = time.monotonic() + 3
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_connections == 0  # its thread is gone


def test_sigterm_with_a_trickling_client_connected_exits_at_once(emulators, tmp_path):
    config = config_for(emulators, tmp_path)
    port = free_port()
    process = FastAGIProcess(config.path, port=port)
    stop = threading.Event()
    result: dict[str, tuple[bool, float]] = {}
    client = threading.Thread(target=lambda: result.update(t=trickle(port, turn_env(tmp_path), 0.2, stop)))
    client.start()
    time.sleep(1.0)  # the client is in the middle of its block (the deadline is 10 s)
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert time.monotonic() - started < 3, "a client still sending its block held the shutdown"
    stop.set()
    client.join(10)
    assert result["t"][0], "the server did not close the trickling connection"


def test_connections_still_sending_their_block_do_not_count_as_calls(make_server, tmp_path):
    server = make_server(max_calls=1)
    silent = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(3)]
    try:
        time.sleep(0.2)
        client = FakeAsterisk(server.server_address[1], turn_env(tmp_path))
        client.run()
        assert client.variables()["VOICEASSIST_STATUS"] == "ok"  # not "busy"
    finally:
        for sock in silent:
            sock.close()


def spooled_turn(tmp_path, uniqueid: str) -> None:
    from voiceassist.storage.spool import Spool
    from voiceassist.types import CallInfo, TurnRecord

    Spool(tmp_path / "db-spool").add_turn(CallInfo(uniqueid, channel="PJSIP/9-1"), TurnRecord(1, transcript="spooled"))


def stored_uniqueids(tmp_path) -> set[str]:
    try:
        with sqlite3.connect(tmp_path / "voiceassist.db") as db:
            return {row[0] for row in db.execute("SELECT uniqueid FROM voiceassist_calls")}
    except sqlite3.OperationalError:
        return set()


def test_a_flood_of_500_connections_gets_refusals_not_emfile_and_real_calls_go_on(emulators, tmp_path):
    """`voiceassist serve` with 256 open files at most: 500 connections at once that never send
    their block. Without a cap every one took a thread and a file, accept() and then the database,
    the spool and the log ran out of files."""
    config = config_for(emulators, tmp_path)
    port = free_port()

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    process = subprocess.Popen([sys.executable, "-m", "voiceassist", "--config", str(config.path), "serve",
                                "--port", str(port)], preexec_fn=low_file_limit,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if "listening" in line:
            break
    reader = threading.Thread(target=lambda: output.extend(process.stdout))  # type: ignore[arg-type]
    reader.start()
    flood: list[socket.socket] = []
    try:
        for n in range(500):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            flood.append(sock)
        time.sleep(2.0)  # the flood has been accepted (or refused) and is stale now
        outcomes = {"refused": 0, "held": 0}
        for sock in flood:
            sock.setblocking(True)
            sock.settimeout(0.01)
            try:
                data = sock.recv(100)
                outcomes["refused"] += 1 if data in (b"", b"FAILURE\n") else 0
            except (socket.timeout, BlockingIOError):
                outcomes["held"] += 1
            except OSError:
                outcomes["refused"] += 1
        assert outcomes["refused"] >= 400, outcomes  # the server took only what it has files for
        # While the flood is still connected: the spool flusher replays a waiting turn ...
        spooled_turn(tmp_path, "1700000500.1")
        deadline = time.monotonic() + 10
        while "1700000500.1" not in stored_uniqueids(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "1700000500.1" in stored_uniqueids(tmp_path), "the spool flusher stopped working"
        # ... and a real call is served (it takes the place of a connection that never sent a block).
        client = FakeAsterisk(port, turn_env(tmp_path, "1700000500.2"))
        client.run()
        assert client.variables()["VOICEASSIST_STATUS"] == "ok"
    finally:
        for sock in flood:
            sock.close()
    # After the flood, the next call as well.
    client = FakeAsterisk(port, turn_env(tmp_path, "1700000500.3"))
    client.run()
    assert client.variables()["VOICEASSIST_STATUS"] == "ok"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    reader.join(10)
    process.stdout.close()
    everything = "".join(output) + log_text(tmp_path)
    assert "Too many open files" not in everything and "EMFILE" not in everything
    assert "Traceback" not in everything
    assert "connections already open" in log_text(tmp_path)


# -- the doctor's check: a FastAGI exchange, not only an open port ---------------------------------
def doctor_check(config_path):
    from voiceassist.admin.doctor import Doctor

    doctor = Doctor(config_path, online=False)
    list(doctor.configuration())
    return doctor.fastagi()


def test_doctor_recognises_our_server_with_the_configured_secret(emulators, tmp_path):
    port = free_port()
    config = config_for(emulators, tmp_path, extra=f"[fastagi]\nport = {port}\nsecret = {SECRET}\n")
    server = FastAGIProcess(config.path, port=port)
    try:
        check = doctor_check(config.path)
        assert check.status == "OK" and "voiceassist" in check.detail and "loopback only" in check.detail, check
        # The same server, asked with another secret, refuses: the doctor says so.
        other = tmp_path / "other.conf"
        other.write_text(config.path.read_text().replace(SECRET, "not-it"))
        check = doctor_check(other)
        assert check.status == "FAIL" and "secret" in check.detail, check
    finally:
        server.stop()


def test_doctor_fails_a_listener_that_is_not_voiceassist(emulators, tmp_path):
    impostor = socket.create_server(("127.0.0.1", 0))
    port = impostor.getsockname()[1]

    def answer_anything() -> None:
        connection, _ = impostor.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer_anything, daemon=True)
    thread.start()
    config = config_for(emulators, tmp_path, extra=f"[fastagi]\nport = {port}\n")
    try:
        check = doctor_check(config.path)
    finally:
        impostor.close()
    assert check.status == "FAIL" and "not voiceassist" in check.detail, check


def test_doctor_fails_a_public_bind_that_serve_would_refuse(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra="[fastagi]\nhost = 0.0.0.0\n")
    check = doctor_check(config.path)
    assert check.status == "FAIL" and "refusing to listen" in check.detail, check
