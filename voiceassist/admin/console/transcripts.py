"""Live transcripts of calls between people on the PBX (``[web] transcribe_calls``, off by default).

An admin picks a call in progress on the live page; the console asks Asterisk (its manager
interface, ``[web] manager``) for two listening channels, one per party:
``AudioSocket/<host>:<port>/<uuid>/c(slin)`` running ``ChanSpy(<channel>,qoES)``. ChanSpy's ``o``
hands over only what the spied channel itself says, so the caller's channel gives the caller's
voice and the channel bridged to it the callee's: two labelled streams, without telling voices
apart. Each AudioSocket connection comes back here with its UUID, which names the party; unknown
UUIDs, late ones and peers not allowed are hung up on. With ``[web] transcribe_announcement``
set, each leg first sends that sound, and ChanSpy's ``w`` whispers it to the party the leg listens
to: both parties hear it once, for the places where the law asks that both be told.
"""

from __future__ import annotations

import re
import select
import socket
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...asterisk.access import is_allowed, parse_allow
from ...asterisk.audiosocket import AUDIO_KINDS, HANGUP_FRAME, KIND_ERROR, KIND_HANGUP, KIND_UUID, AudioSocketError, \
    _read_exactly, frame
from ...asterisk.manager import Manager, ManagerError, Message, manager_address
from ...call.assistant import Assistant
from ...call.transcript import CallTranscript, SpeakerTranscript
from ...config import Config
from ...errors import VoiceAssistError
from ...logs import logger
from ...types import CallInfo

CHANNEL_NAME = re.compile(r"[A-Za-z0-9/@;._:+#*-]{3,128}")
EXPECT_SECONDS = 15.0      # Asterisk connects within this after the originate, or the UUID expires
READ_SECONDS = 30.0        # no frame at all for this long: the listening channel is gone
IDLE_SECONDS = 0.1         # no frame for this long: that much silence
ANNOUNCEMENT_FRAME = 320   # 20 ms of 8 kHz signed linear


class TranscribeError(VoiceAssistError):
    """A call could not be transcribed (not found, the manager refused, already transcribed)."""


@dataclass
class PBXCall:
    """A call in progress as the manager lists it: the chosen channel and the one it talks to."""

    channel: str
    uniqueid: str
    linkedid: str
    caller_number: str
    caller_name: str
    connected: str
    extension: str
    seconds: int
    peer: str = ""
    transcribed: bool = False


def pbx_calls(channels: list[Message]) -> list[PBXCall]:
    """Calls between two channels: bridged pairs (by bridge) and the two ends of a Local channel,
    each listed once, from the side that placed it."""
    channels = sorted(channels, key=lambda c: _created(c.get("Uniqueid", "")))  # the first made placed the call
    by_name = {c.get("Channel", ""): c for c in channels}
    calls: list[PBXCall] = []
    seen: set[str] = set()
    bridges: dict[str, list[Message]] = {}
    for channel in channels:
        if channel.get("BridgeId"):
            bridges.setdefault(channel["BridgeId"], []).append(channel)
    for channel in channels:
        name = channel.get("Channel", "")
        if name in seen or not CHANNEL_NAME.fullmatch(name):
            continue
        peer = ""
        members = bridges.get(channel.get("BridgeId", ""), [])
        if len(members) == 2:
            peer = next(m["Channel"] for m in members if m is not channel)
        elif name.startswith("Local/") and name.endswith((";1", ";2")):
            other = name[:-1] + ("2" if name.endswith("1") else "1")
            peer = other if other in by_name else ""
        if not peer:
            continue
        seen.update((name, peer))
        calls.append(PBXCall(channel=name, uniqueid=channel.get("Uniqueid", ""), linkedid=channel.get("Linkedid", ""),
                             caller_number=_known(channel.get("CallerIDNum")),
                             caller_name=_known(channel.get("CallerIDName")),
                             connected=_known(channel.get("ConnectedLineNum")), extension=channel.get("Exten", ""),
                             seconds=_seconds(channel.get("Duration", "")), peer=peer))
    return calls


def _known(value: str | None) -> str:
    """A caller ID field, empty where Asterisk says it has none."""
    return "" if value in (None, "<unknown>") else str(value)


def _created(uniqueid: str) -> tuple[int, int]:
    """Asterisk's uniqueid (``<epoch>.<sequence>``) in the order channels were made."""
    seconds, _, sequence = uniqueid.partition(".")
    try:
        return int(seconds), int(sequence)
    except ValueError:
        return (2 ** 62, 0)


def _seconds(duration: str) -> int:
    try:
        hours, minutes, seconds = (int(part) for part in duration.split(":"))
        return hours * 3600 + minutes * 60 + seconds
    except ValueError:
        return 0


@dataclass
class _Expected:
    transcript: CallTranscript
    speaker: str
    until: float
    announce: bytes = b""


@dataclass
class _Session:
    transcript: CallTranscript
    legs: set[str] = field(default_factory=set)


class CallTranscriber:
    """The console's side: the list of calls, starting a transcript, the AudioSocket listener."""

    def __init__(self, config: Config, tell: Callable[[dict[str, Any]], None],
                 assistant: Assistant | None = None) -> None:
        self.config = config
        self.web = config.web
        self.tell = tell
        self.assistant = assistant or Assistant(config)
        self.allowed = parse_allow(", ".join(self.web.transcribe_allow))
        self._expected: dict[str, _Expected] = {}
        self._sessions: dict[str, _Session] = {}
        self._connected: set[str] = set()  # legs Asterisk has connected (their calls are under way)
        self._lock = threading.Lock()
        self._server = _TCPServer((self.web.transcribe_host, self.web.transcribe_port), _Handler, self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="voiceassist-transcribe")

    def start_listening(self) -> None:
        self._thread.start()
        logger.info("[WEB] live transcripts: listening for Asterisk's audio on %s:%d", self.web.transcribe_host,
                    self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the pages' side ----------------------------------------------------------------------------
    def _manager(self) -> Manager:
        return Manager(manager_address(self.web.manager))

    def calls(self) -> list[PBXCall]:
        with self._manager() as manager:
            calls = pbx_calls(manager.channels())
        with self._lock:
            self._expire()
            for call in calls:
                call.transcribed = call.uniqueid in self._sessions
        return [c for c in calls if not c.channel.startswith("AudioSocket/")]

    def start(self, channel: str, account: str) -> PBXCall:
        """Transcribe the call of ``channel`` (as listed by :meth:`calls`)."""
        if not CHANNEL_NAME.fullmatch(channel):
            raise TranscribeError("no such call")
        with self._manager() as manager:
            call = next((c for c in pbx_calls(manager.channels()) if channel in (c.channel, c.peer)), None)
            if call is None:
                raise TranscribeError("that call is not in progress any more")
            if call.channel != channel:  # the listed side is the caller's
                call = next(c for c in pbx_calls(manager.channels()) if c.channel == call.channel)
            with self._lock:
                self._expire()
                if call.uniqueid in self._sessions:
                    raise TranscribeError("that call is already being transcribed")
                info = CallInfo(uniqueid=call.uniqueid, linkedid=call.linkedid, channel=call.channel,
                                caller_number=call.caller_number, caller_name=call.caller_name,
                                extension=call.extension)
                transcript = CallTranscript(self.assistant, info, self.tell)
                self._sessions[call.uniqueid] = _Session(transcript)
            self.tell({"type": "call.started", "call": call.uniqueid, "at": time.time(), "transcript": True,
                       "from": {"caller_number": call.caller_number, "caller_name": call.caller_name,
                                "extension": call.extension, "connected": call.connected}})
            announcement = self._announcement()
            for speaker, target in (("caller", call.channel), ("callee", call.peer)):
                leg = str(uuid.uuid4())
                # w: what this leg sends is whispered to the party it listens to (the announcement).
                options = "qoES" + ("w" if announcement else "")
                with self._lock:
                    self._expected[leg] = _Expected(transcript, speaker, time.monotonic() + EXPECT_SECONDS,
                                                    announcement)
                    self._sessions[call.uniqueid].legs.add(leg)
                try:
                    manager.originate(f"AudioSocket/{self._address()}/{leg}/c(slin)", "ChanSpy",
                                      f"{target},{options}")
                except ManagerError:
                    with self._lock:
                        self._expected.pop(leg, None)
                        self._sessions.pop(call.uniqueid, None)
                    raise
        logger.info("[WEB] %s started a live transcript of %s (%s ↔ %s)", account, call.uniqueid, call.channel,
                    call.peer)
        return call

    def _address(self) -> str:
        host = self.web.transcribe_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def _announcement(self) -> bytes:
        """The announcement's audio as 8 kHz signed linear: a file (.wav, or raw .ulaw), or an
        Asterisk sound name found in its sounds directories."""
        name = self.web.transcribe_announcement
        if not name:
            return b""
        from ...audio.conversion import ulaw_to_pcm
        from ...audio.recording import read_recording
        from ...errors import AudioError

        candidates = [Path(name)] if name.startswith("/") else [
            directory / f"{name}{suffix}" for directory in (Path("/var/lib/asterisk/sounds"),
                                                             Path("/usr/share/asterisk/sounds"))
            for suffix in (".wav", ".ulaw")]
        for path in candidates:
            if not path.is_file():
                continue
            try:
                if path.suffix == ".ulaw":
                    return ulaw_to_pcm(path.read_bytes(), 8000, 8000)
                recording = read_recording(path, 60)
                if recording.sample_rate == 8000:
                    return recording.pcm
            except (OSError, AudioError) as exc:
                logger.warning("[WEB] the transcript announcement %s cannot be read: %s", path, exc)
        logger.warning("[WEB] the transcript announcement %s was not found (8 kHz .wav or .ulaw); transcribing "
                       "without it", name)
        return b""

    # -- Asterisk's side ----------------------------------------------------------------------------
    def accept(self, leg: str) -> _Expected | None:
        with self._lock:
            self._expire()
            expected = self._expected.pop(leg, None)
            if expected is not None:
                self._connected.add(leg)
            return expected

    def _expire(self) -> None:
        """Forget legs Asterisk never connected, and a call none of whose legs ever came (it
        can be transcribed again)."""
        now = time.monotonic()
        for stale in [key for key, value in self._expected.items() if value.until < now]:
            del self._expected[stale]
        for uniqueid, session in list(self._sessions.items()):
            if session.legs and not session.legs & (self._connected | set(self._expected)):
                del self._sessions[uniqueid]
                logger.warning("[WEB] the live transcript of %s never started: Asterisk did not connect", uniqueid)

    def leg_ended(self, transcript: CallTranscript) -> None:
        if not transcript.speaker_done():
            return
        with self._lock:
            session = self._sessions.pop(transcript.call.uniqueid, None)
            if session is not None:
                self._connected -= session.legs
        try:
            transcript.assistant.journal().end_call(transcript.call, "transcribed")
        except Exception as exc:
            logger.error("[WEB] %s transcript end NOT stored: %s", transcript.call.uniqueid, exc)
        self.tell({"type": "call.ended", "call": transcript.call.uniqueid, "at": time.time(), "state": "transcribed"})


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler],
                 transcriber: CallTranscriber) -> None:
        self.transcriber = transcriber
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        allowed = is_allowed(str(client_address[0]), self.transcriber.allowed)
        if not allowed:
            logger.warning("[WEB] transcript audio from %s refused: not in [web] transcribe_allow", client_address[0])
        return allowed


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        transcriber = self.server.transcriber
        try:
            header = _read_exactly(sock, 3, time.monotonic() + 5)
            kind, length = header[0], int.from_bytes(header[1:3], "big")
            if kind != KIND_UUID or length != 16:
                raise AudioSocketError("no UUID first")
            leg = str(uuid.UUID(bytes=_read_exactly(sock, 16, time.monotonic() + 5)))
        except (AudioSocketError, ValueError) as exc:
            logger.warning("[WEB] transcript audio connection dropped: %s", exc)
            return
        expected = transcriber.accept(leg)
        if expected is None:
            logger.warning("[WEB] transcript audio for an unknown or late leg %s: hung up", leg)
            sock.sendall(HANGUP_FRAME)
            return
        speaker: SpeakerTranscript | None = None
        received = 0
        try:
            if expected.announce:
                threading.Thread(target=_play, args=(sock, expected.announce), daemon=True).start()
            last_frame = time.monotonic()
            while True:
                # A channel that sends nothing while its party is quiet (a Local channel, silence
                # suppression) would keep an utterance open: its quiet is fed as silence.
                ready, _, _ = select.select([sock], [], [], IDLE_SECONDS)
                if not ready:
                    if time.monotonic() - last_frame > READ_SECONDS:
                        return
                    if speaker is not None:
                        speaker.feed(bytes(int(speaker.rate * IDLE_SECONDS) * 2))
                    continue
                last_frame = time.monotonic()
                header = _read_exactly(sock, 3, time.monotonic() + 5)
                kind, length = header[0], int.from_bytes(header[1:3], "big")
                payload = _read_exactly(sock, length, time.monotonic() + 5) if length else b""
                if kind in (KIND_HANGUP, KIND_ERROR):
                    return
                rate = AUDIO_KINDS.get(kind)
                if rate is None:
                    continue  # DTMF and kinds we do not use
                if speaker is None:
                    speaker = expected.transcript.speaker(expected.speaker, rate)
                received += len(payload) // 2
                speaker.feed(payload)
        except AudioSocketError:
            return  # the listening channel ended (the call ended, or it was hung up)
        finally:
            logger.info("[WEB] %s: the %s's audio ended after %.1f s", expected.transcript.call.uniqueid,
                        expected.speaker, received / (speaker.rate if speaker else 8000))
            if speaker is not None:
                speaker.close()
                transcriber.leg_ended(expected.transcript)


def _play(sock: socket.socket, pcm: bytes) -> None:
    """Send ``pcm`` paced in 20 ms frames (ChanSpy's barge: both parties hear it)."""
    start = time.monotonic()
    for number, offset in enumerate(range(0, len(pcm), ANNOUNCEMENT_FRAME)):
        delay = start + number * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            sock.sendall(frame(0x10, pcm[offset:offset + ANNOUNCEMENT_FRAME]))
        except OSError:
            return
