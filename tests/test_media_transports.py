"""The two media transports on their own wire, with a client speaking each protocol as Asterisk does
(AudioSocket's type-length-value frames over TCP; the WebSocket channel's MEDIA_START, binary
audio and JSON commands): pacing, marks, barge-in, keys, hang-ups, and strangers refused. The rig
tests (test_rig_live.py) make the same calls through the real Asterisk."""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import uuid

import pytest

from voiceassist.asterisk.access import parse_allow
from voiceassist.asterisk.audiosocket import HANGUP_FRAME, AudioSocketServer, frame
from voiceassist.asterisk.websocket_media import WebSocketMediaServer
from voiceassist.call.media import MediaEventKind, MediaLeg

LOOPBACK = parse_allow("127.0.0.1, ::1")
ONLY_127_0_0_2 = parse_allow("127.0.0.2")


class Acceptor:
    """The route's side: which ids are announced, and the legs that got in."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.legs: list[MediaLeg] = []
        self.arrived = threading.Event()

    def __call__(self, leg: MediaLeg) -> bool:
        if uuid.UUID(leg.call_id).hex not in self.ids:
            return False
        self.ids.discard(uuid.UUID(leg.call_id).hex)
        if getattr(leg, "rate_from_control", False):
            leg.sample_rate = 8000
        self.legs.append(leg)
        self.arrived.set()
        return True


def events_until(leg: MediaLeg, kind: MediaEventKind, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        event = leg.next_event(0.1)
        if event is None:
            continue
        seen.append(event)
        if event.kind is kind:
            return seen
    raise AssertionError(f"no {kind} within {timeout} s: {[e.kind for e in seen]}")


# -- AudioSocket ------------------------------------------------------------------------------------------
@pytest.fixture
def audiosocket():
    servers = []

    def start(acceptor, allow=LOOPBACK, uuid_timeout=2.0):
        server = AudioSocketServer("127.0.0.1", 0, allow=allow, accept=acceptor, max_connections=4,
                                   uuid_timeout=uuid_timeout)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def read_frames(sock: socket.socket, seconds: float) -> list[tuple[float, int, bytes]]:
    """(arrival time, kind, payload) of every frame within ``seconds``."""
    sock.settimeout(0.05)
    buffer, frames, end = b"", [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 3:
            kind, length = struct.unpack(">BH", buffer[:3])
            if len(buffer) < 3 + length:
                break
            frames.append((time.monotonic(), kind, buffer[3:3 + length]))
            buffer = buffer[3 + length:]
    return frames


def test_audiosocket_paces_the_answer_at_one_frame_per_20_ms_and_fires_marks_after_it(audiosocket):
    call_id = uuid.uuid4()
    acceptor = Acceptor(call_id.hex)
    server = audiosocket(acceptor)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(frame(0x01, call_id.bytes))
        assert acceptor.arrived.wait(5)
        leg = acceptor.legs[0]
        leg.play(b"\x10\x00" * 8000)            # one second at 8 kHz, in a single piece
        leg.mark("end")
        frames = read_frames(sock, 1.4)
        assert all(f[1] == 0x10 for f in frames), "audio frames only (silence while nothing plays)"
        audio = [f for f in frames if any(f[2])]
        assert len(audio) == 50 and all(len(f[2]) == 320 for f in audio)
        span = audio[-1][0] - audio[0][0]
        assert span == pytest.approx(0.98, abs=0.04), span   # 49 intervals of 20 ms, not a burst
        gaps = [b[0] - a[0] for a, b in zip(audio, audio[1:])]
        assert max(gaps) < 0.045, max(gaps)
        marks = events_until(leg, MediaEventKind.MARK)
        assert marks[-1].mark == "end" and marks[-1].at >= audio[-1][0] - 0.005


def test_audiosocket_delivers_caller_audio_in_20_ms_frames_keys_and_the_hangup(audiosocket):
    call_id = uuid.uuid4()
    acceptor = Acceptor(call_id.hex)
    server = audiosocket(acceptor)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(frame(0x01, call_id.bytes))
        assert acceptor.arrived.wait(5)
        leg = acceptor.legs[0]
        # Asterisk may send other sizes: the leg hands over whole 20 ms frames.
        sock.sendall(frame(0x10, b"\x01\x00" * 240) + frame(0x10, b"\x01\x00" * 80) + frame(0x03, b"#"))
        seen = events_until(leg, MediaEventKind.DTMF)
        assert [len(e.audio) for e in seen if e.kind is MediaEventKind.AUDIO] == [320, 320]
        assert seen[-1].digit == "#"
        sock.sendall(HANGUP_FRAME)
        events_until(leg, MediaEventKind.CLOSED)


def test_audiosocket_pump_that_dies_ends_its_calls_and_the_next_call_gets_a_new_one(audiosocket):
    """The pump paces every call in its own process: if it dies, its calls end (the route then
    tells the dialplan the media was lost) and the next call starts a new pump."""
    import os
    import signal

    first, second = uuid.uuid4(), uuid.uuid4()
    acceptor = Acceptor(first.hex, second.hex)
    server = audiosocket(acceptor)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(frame(0x01, first.bytes))
        assert acceptor.arrived.wait(5)
        leg = acceptor.legs[0]
        old_pump = server.pump.pid
        os.kill(old_pump, signal.SIGKILL)
        events_until(leg, MediaEventKind.CLOSED)
        sock.settimeout(2)                           # Asterisk's side sees the connection go
        while sock.recv(65536):
            pass
    acceptor.arrived.clear()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(frame(0x01, second.bytes))
        assert acceptor.arrived.wait(5)
        leg = acceptor.legs[1]
        assert server.pump.pid != old_pump
        leg.play(b"\x10\x00" * 1600)                 # 200 ms
        audio = [f for f in read_frames(sock, 0.6) if any(f[2])]
        assert len(audio) == 10


def test_audiosocket_barge_in_drops_what_is_queued_and_says_what_was_heard(audiosocket):
    call_id = uuid.uuid4()
    acceptor = Acceptor(call_id.hex)
    server = audiosocket(acceptor)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(frame(0x01, call_id.bytes))
        assert acceptor.arrived.wait(5)
        leg = acceptor.legs[0]
        leg.play(b"\x10\x00" * 8000 * 3)
        leg.mark("never")
        before = [f for f in read_frames(sock, 0.5) if any(f[2])]
        heard = leg.stop_playing()
        assert heard == pytest.approx(len(before) * 0.02, abs=0.03) and leg.queued_seconds() == 0
        assert heard == pytest.approx(0.5, abs=0.06)
        frames = read_frames(sock, 0.6)
        assert not [f for f in frames if any(f[2])][1:], "answer audio after the stop"  # one may be in flight
        assert leg.next_event(0.3) is None or leg.next_event(0.3).kind is not MediaEventKind.MARK


def test_our_hang_up_sends_the_hangup_frame(audiosocket):
    call_id = uuid.uuid4()
    acceptor = Acceptor(call_id.hex)
    server = audiosocket(acceptor)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(frame(0x01, call_id.bytes))
        assert acceptor.arrived.wait(5)
        acceptor.legs[0].hang_up()
        frames = read_frames(sock, 0.5)
        assert frames and frames[-1][1] == 0x00


@pytest.mark.parametrize("first", [
    pytest.param(lambda: frame(0x01, uuid.uuid4().bytes), id="unannounced-id"),
    pytest.param(lambda: b"\xff\xff\xff" + b"x" * 64, id="garbage"),
    pytest.param(lambda: frame(0x10, b"\0" * 320), id="audio-before-the-id"),
    pytest.param(lambda: frame(0x01, b"short"), id="short-id"),
])
def test_audiosocket_strangers_are_told_to_hang_up_at_once(audiosocket, first):
    acceptor = Acceptor(uuid.uuid4().hex)
    server = audiosocket(acceptor, uuid_timeout=10)
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        started = time.monotonic()
        sock.sendall(first())
        reply = sock.recv(1024)
        assert reply in (b"", HANGUP_FRAME) and time.monotonic() - started < 1
    assert not acceptor.legs


def test_audiosocket_refuses_a_peer_outside_allow_before_reading(audiosocket):
    call_id = uuid.uuid4()
    acceptor = Acceptor(call_id.hex)
    server = audiosocket(acceptor, allow=ONLY_127_0_0_2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        sock.sendall(frame(0x01, call_id.bytes))
        assert sock.recv(1024) == b""
    assert not acceptor.legs


def test_audiosocket_a_silent_connection_is_dropped_at_the_id_deadline(audiosocket):
    server = audiosocket(Acceptor(), uuid_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        started = time.monotonic()
        assert sock.recv(1024) in (b"", HANGUP_FRAME)
        assert 0.4 < time.monotonic() - started < 2


# -- Asterisk's WebSocket channel ---------------------------------------------------------------------------
@pytest.fixture
def websocket():
    servers = []

    def start(acceptor, allow=LOOPBACK, password=""):
        server = WebSocketMediaServer("127.0.0.1", 0, allow=allow, accept=acceptor, max_connections=4,
                                      password=password)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def media_start(variables: dict[str, str], fmt: str = "slin") -> str:
    return json.dumps({"event": "MEDIA_START", "connection_id": "voiceassist", "channel": "WebSocket/voiceassist/0x1",
                       "channel_id": "1733000000.9", "format": fmt, "optimal_frame_size": 320 if fmt == "slin" else 640,
                       "ptime": 20, "channel_variables": variables})


def connect(server, query: str = "", headers=None):
    from websockets.sync.client import connect as ws_connect

    return ws_connect(f"ws://127.0.0.1:{server.port}/media{query}", additional_headers=headers or {},
                      compression=None, open_timeout=3)


def test_websocket_call_gets_in_by_its_channel_variable_and_gets_whole_frames_with_a_small_lead(websocket):
    call_id = uuid.uuid4().hex
    acceptor = Acceptor(call_id)
    server = websocket(acceptor)
    # The query names another call (v() is shared between calls): the channel variable wins.
    with connect(server, f"?call={uuid.uuid4().hex}") as ws:
        ws.send(media_start({"__VA_MEDIA_ID": call_id}))
        assert acceptor.arrived.wait(5)
        leg = acceptor.legs[0]
        assert leg.sample_rate == 8000
        leg.play(b"\x10\x00" * 8000)                # one second
        leg.mark("end")
        received, commands, started = b"", [], time.monotonic()
        while time.monotonic() - started < 0.5:
            try:
                message = ws.recv(timeout=0.05)
            except TimeoutError:
                continue
            if isinstance(message, bytes):
                assert len(message) % 320 == 0
                received += message
            else:
                commands.append(json.loads(message))
        # Asterisk re-times: half a second in, we have sent that plus the lead, not the whole second.
        assert 0.55 <= len(received) / 16000 <= 0.8, len(received) / 16000
        assert leg.queued_seconds() == pytest.approx(1.0 - 0.5, abs=0.1)
        while len(received) < 16000 or not commands:
            message = ws.recv(timeout=2)
            if isinstance(message, bytes):
                received += message
            else:
                commands.append(json.loads(message))
        assert commands == [{"command": "MARK_MEDIA", "correlation_id": "m1"}]
        ws.send(json.dumps({"event": "MEDIA_MARK_PROCESSED", "channel_id": "1733000000.9", "correlation_id": "m1"}))
        ws.send(json.dumps({"event": "DTMF_END", "channel_id": "1733000000.9", "digit": "5"}))
        ws.send(b"\x01\x00" * 480)                   # 1.5 frames of caller audio, then the rest
        ws.send(b"\x01\x00" * 160)
        seen = events_until(leg, MediaEventKind.MARK)
        assert seen[-1].mark == "end"
        seen = events_until(leg, MediaEventKind.DTMF)
        assert seen[-1].digit == "5"
        seen = [e for e in events_until(leg, MediaEventKind.AUDIO)]
        assert len(seen[-1].audio) == 320
    events_until(leg, MediaEventKind.CLOSED)


def test_websocket_barge_in_flushes_asterisks_queue_and_hang_up_sends_hangup(websocket):
    call_id = uuid.uuid4().hex
    acceptor = Acceptor(call_id)
    server = websocket(acceptor)
    with connect(server, f"?call={call_id}") as ws:
        ws.send(media_start({}, fmt="slin16"))
        assert acceptor.arrived.wait(5)
        leg = acceptor.legs[0]
        assert leg.sample_rate == 16000
        leg.play(b"\x10\x00" * 16000 * 3)
        time.sleep(0.5)
        heard = leg.stop_playing()
        assert heard == pytest.approx(0.5, abs=0.1)
        leg.hang_up()
        commands = []
        try:
            while True:
                message = ws.recv(timeout=2)
                if isinstance(message, str):
                    commands.append(json.loads(message)["command"])
        except Exception:
            pass
        assert commands == ["FLUSH_MEDIA", "HANGUP"]


@pytest.mark.parametrize("case", ["unannounced", "not-media-start", "wrong-format"])
def test_websocket_strangers_never_get_into_a_call(websocket, case):
    call_id = uuid.uuid4().hex
    acceptor = Acceptor(call_id)
    server = websocket(acceptor)
    first = {"unannounced": media_start({"VA_MEDIA_ID": uuid.uuid4().hex}),
             "not-media-start": json.dumps({"event": "DTMF_END", "digit": "1"}),
             "wrong-format": media_start({"VA_MEDIA_ID": call_id}, fmt="ulaw")}[case]
    with connect(server) as ws:
        ws.send(first)
        with pytest.raises(Exception):
            while True:
                message = ws.recv(timeout=3)
                assert isinstance(message, str) and json.loads(message)["command"] == "HANGUP"
    assert not acceptor.legs


@pytest.mark.parametrize("case", ["peer", "path", "password"])
def test_websocket_handshake_refused_for_a_stranger_peer_path_or_password(websocket, case):
    from websockets.exceptions import InvalidStatus

    acceptor = Acceptor(uuid.uuid4().hex)
    server = websocket(acceptor, allow=ONLY_127_0_0_2 if case == "peer" else LOOPBACK, password="s3cret")
    from websockets.sync.client import connect as ws_connect

    good = {"Authorization": "Basic " + base64.b64encode(b"voiceassist:s3cret").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"voiceassist:guess").decode()}
    path = "/other" if case == "path" else "/media"
    headers = bad if case == "password" else good
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{server.port}{path}", additional_headers=headers, open_timeout=3)
    assert refused.value.response.status_code == {"peer": 403, "path": 404, "password": 401}[case]
    if case != "peer":
        with connect(server, headers=good) as ws:  # the right password on the right path gets a handshake
            ws.send(json.dumps({"event": "nothing"}))


class StallingSocket:
    """The kernel's side of a socket whose peer stops reading: it takes ``budget`` bytes (part of
    a frame, as a nearly full buffer does), then nothing until ``budget`` is raised again."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.wire = bytearray()

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.budget <= 0:
            raise BlockingIOError
        taken = min(len(data), self.budget)
        self.budget -= taken
        self.wire += data[:taken]
        return taken

    def shutdown(self, how: int) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass


def test_audiosocket_a_peer_that_stops_reading_loses_whole_frames_never_part_of_one(request):
    """Asterisk stalls: the leg keeps a few frames for it and drops the oldest unsent ones, but
    never the rest of a frame already partly sent (Asterisk would read it as a header)."""
    from voiceassist.asterisk.legs import MediaClock
    from voiceassist.asterisk.media_pump import _PumpedLeg

    peer = StallingSocket(budget=3 * 323 + 100)            # three frames and part of the fourth
    events, commands = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    leg = _PumpedLeg(MediaClock(), peer, events, commands, 8000)  # type: ignore[arg-type]
    request.addfinalizer(events.close)
    request.addfinalizer(commands.close)
    leg.playout.add(bytes(range(1, 161)) * 2 * 100)        # 2 s of audio
    for _ in range(40):                                    # 40 ticks while Asterisk reads nothing
        leg.tick(time.monotonic())
    assert leg.dropped_bytes > 0
    peer.budget = 1 << 20                                  # it reads again
    for _ in range(5):
        leg.tick(time.monotonic())
    wire = bytes(peer.wire)
    assert len(wire) >= 8 * 323
    while wire:
        kind, length = struct.unpack(">BH", wire[:3])
        assert (kind, length) == (0x10, 320), (kind, length)
        wire = wire[323:]
