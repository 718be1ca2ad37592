"""An AI server speaking the external-AI WebSocket protocol (see voiceassist/providers/ai_websocket.py),
on loopback, recording what it receives.

Not a model: it finds where the caller stops with a level detector on the μ-law it is sent
(``vad_silence_duration_ms`` from ``session.init``), names the question by the marker tone at its
start (``transcripts``, as the speech emulators do), says ``Answer N: you asked, <question>`` as
a tone whose frequency names that text (``openai_api.tone_for``), sent as fast as it is made, as
real servers do, and tells the caller's barge-in when they talk over the answer's playing time.
Faults for the tests: refusing the connection, closing or a fatal error at the Nth question,
never answering, malformed messages before an answer, the protocol's second spelling.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

from .openai_api import tone_for
from .speech import marker_strength

RATE = 8000
FRAME = 160  # 20 ms of 8 kHz μ-law
CHUNK_SECONDS = 0.2


def ulaw_to_linear(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.float64)


def linear_to_ulaw(samples: np.ndarray) -> bytes:
    """G.711 μ-law encoding of 16-bit samples."""
    x = np.clip(samples.astype(np.int32), -32635, 32635)
    sign = np.where(x < 0, 0x80, 0)
    x = np.abs(x) + 0x84
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def answer_ulaw(text: str, seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return linear_to_ulaw(np.sin(2 * np.pi * tone_for(text) * t) * 9000)


@dataclass
class Session:
    """One connection as the server saw it."""

    init: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    audio_bytes: int = 0
    texts: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    barge_ins: list[float] = field(default_factory=list)   # time.monotonic() of each one sent


class AIServerEmulator:
    def __init__(self) -> None:
        self.transcripts: dict[float, str] = {}
        self.sessions: list[Session] = []
        self._send_lock = threading.Lock()
        self.reset()
        self.server = serve(self._handle, "127.0.0.1", 0, process_request=self._authorize, compression=None)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="emulator-ai-server")
        self.thread.start()

    def reset(self) -> None:
        self.token = "test-ai-token"
        self.refuse_status: int | None = None     # answer the handshake with this HTTP status
        self.second_spelling = False               # ready / audio_chunk / transcription / speech_started / audio_done
        self.answer_seconds = 2.0
        self.answer_delay = 0.15                   # after the end of the question
        self.close_at_question: int | None = None  # close the connection when question N ends
        self.fatal_at_question: int | None = None  # send a fatal error instead of answer N
        self.silent = False                        # transcribe the question, never answer it
        self.malformed = False                     # bad messages before each answer
        self.stall_at_question: int | None = None  # begin answer N, then say nothing more
        self.late_transcripts = False              # both sides' words only after the answer has played
        self.sessions = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/ai"

    def close(self) -> None:
        self.server.shutdown()

    def _authorize(self, connection: ServerConnection, request: Any) -> Response | None:
        if self.refuse_status is not None:
            return connection.respond(self.refuse_status, "emulated refusal\n")
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return connection.respond(401, "missing or wrong token\n")
        return None

    def _send(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        with self._send_lock:  # late transcripts come from a timer's thread
            connection.send(json.dumps(message))

    def _handle(self, connection: ServerConnection) -> None:
        headers = connection.request.headers if connection.request else {}
        session = Session(headers={name.lower(): value for name, value in headers.items()})
        self.sessions.append(session)
        alt = self.second_spelling
        voiced_run = quiet_run = 0
        heard: list[np.ndarray] = []
        in_question = False
        speaking_until = 0.0
        answers = 0
        try:
            for raw in connection:
                try:
                    message = json.loads(raw)
                except ValueError:
                    self._send(connection, {"type": "error", "message": "not JSON", "fatal": False})
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "session.init":
                    session.init = message.get("config", {})
                    self._send(connection, {"type": "ready" if alt else "session_started", "session_id": "s1"})
                    continue
                if kind == "text.input":
                    session.texts.append(str(message.get("text")))
                    continue
                if kind != "audio.input":
                    self._send(connection, {"type": "error", "message": f"unknown type {kind!r}", "fatal": False})
                    continue
                samples = ulaw_to_linear(base64.b64decode(message.get("audio", "")))
                session.audio_bytes += len(samples)
                voiced = len(samples) > 0 and float(np.abs(samples).mean()) > 256
                now = time.monotonic()
                if voiced:
                    voiced_run += 1
                    quiet_run = 0
                else:
                    quiet_run += 1
                    voiced_run = 0
                if voiced and now < speaking_until and voiced_run >= 10:  # 200 ms over the answer
                    speaking_until = 0.0
                    session.barge_ins.append(now)
                    self._send(connection, {"type": "speech_started" if alt else "user_speech_started"})
                if voiced and not in_question and now >= speaking_until:
                    in_question, heard = True, []
                if in_question and voiced_run == 10:  # like a server's VAD: every time the caller starts
                    self._send(connection, {"type": "speech_started" if alt else "user_speech_started"})
                if in_question:
                    heard.append(samples)
                    silence_ms = int(session.init.get("vad_silence_duration_ms", 500))
                    if quiet_run * 20 >= silence_ms:
                        in_question = False
                        question = self._question(np.concatenate(heard))
                        session.questions.append(question)
                        number = len(session.questions)
                        if self.close_at_question == number:
                            connection.close()
                            return
                        if self.fatal_at_question == number:
                            self._send(connection, {"type": "error", "message": "model crashed", "fatal": True})
                            continue
                        if self.stall_at_question == number:
                            self._send(connection, {"type": "transcript", "text": question, "role": "user"})
                            self._send(connection, {"type": "audio_delta", "audio": base64.b64encode(
                                answer_ulaw(f"Answer {number}: you asked, {question}", 0.4)).decode("ascii")})
                            continue
                        if self.silent:  # it heard the caller, and never answers
                            self._send(connection, {"type": "transcript", "text": question, "role": "user"})
                            continue
                        answers += 1
                        speaking_until = self._answer(connection, question, answers, alt)
        except Exception:  # the client went away
            return

    def _question(self, pcm: np.ndarray) -> str:
        for frequency, text in self.transcripts.items():
            if marker_strength(pcm, RATE, frequency) > 0.5:
                return text
        return "What are your opening hours?"

    def _answer(self, connection: ServerConnection, question: str, number: int, alt: bool) -> float:
        time.sleep(self.answer_delay)
        if self.malformed:
            connection.send("{not json")
            connection.send(json.dumps(["a", "list"]))
            self._send(connection, {"type": "audio_delta", "audio": "***not base64***"})
            self._send(connection, {"type": "mystery_event"})
        reply = f"Answer {number}: you asked, {question}"
        words = [{"type": "transcript", "text": question, "role": "user"},
                 {"type": "transcript", "text": reply, "role": "assistant"}]
        if self.late_transcripts:
            def late() -> None:
                try:
                    for message in words:
                        self._send(connection, message)
                except Exception:  # the call is over
                    pass
            threading.Timer(self.answer_seconds + 0.4, late).start()
        elif alt:
            self._send(connection, {"type": "transcription", "text": question, "speaker": "user"})
            self._send(connection, {"type": "transcription", "text": reply, "speaker": "assistant"})
        else:
            for message in words:
                self._send(connection, message)
        audio = answer_ulaw(reply, self.answer_seconds)
        step = int(CHUNK_SECONDS * RATE)
        for start in range(0, len(audio), step):
            data = base64.b64encode(audio[start:start + step]).decode("ascii")
            self._send(connection, {"type": "audio_chunk", "data": data} if alt else {"type": "audio_delta", "audio": data})
        self._send(connection, {"type": "audio_done" if alt else "response_complete"})
        # The caller hears it in real time: it plays until about now + its length.
        return time.monotonic() + self.answer_seconds
