"""Google's Gemini Live API (``BidiGenerateContent`` over WebSocket) on loopback, recording what it
receives, for the unmodified ``google-genai`` SDK (``client.aio.live.connect``) to talk to.

The SDK turns any ``base_url`` into ``wss://`` (it replaces the scheme), so the emulator speaks
TLS with a certificate made for 127.0.0.1 when it starts: the client trusts it through
``SSL_CERT_FILE`` (read when the ``genai.Client`` is made; :attr:`GeminiLiveEmulator.ca_file` is the
certifi bundle plus that certificate) or ``HttpOptions(async_client_args={"ssl": emulator.ssl_context()})``.
The path is ``/ws/google.ai.generativelanguage.<version>.GenerativeService.BidiGenerateContent``,
the key comes in the ``x-goog-api-key`` header (or ``?key=``). Client messages are JSON text
frames whose keys the SDK spells both ways (``setup`` with camelCase fields but snake_case inside
``speechConfig``; ``realtime_input`` / ``tool_response`` / ``client_content`` at the top, audio
as URL-safe base64): the emulator takes either spelling, as the service does. Its own messages
are camelCase JSON in binary frames, as the service sends them.

Not a model: it finds where the caller stops with a level detector on the 16 kHz PCM it is sent,
names the question by the marker tone at its start (``transcripts``, as the speech emulators do),
and answers ``Answer N: you asked, <question>`` as ``inputTranscription``, ``outputTranscription``
and a tone whose frequency names that text (``openai_api.tone_for``) at 24 kHz, sent as fast as it
is made, then ``generationComplete`` and ``turnComplete``. It says ``interrupted`` when the caller
talks over the answer's playing time, and calls a declared function for the questions in
``tool_calls``. Faults for the tests: refusing the handshake, closing or an internal error (close
code 1011) at the Nth question, never answering, stalling in an answer, ``goAway``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

from .openai_api import tone_for
from .speech import marker_strength

IN_RATE = 16000
OUT_RATE = 24000
FRAME_MS = 20
CHUNK_SECONDS = 0.2
BARGE_IN_FRAMES = 10  # 200 ms of the caller's voice over the answer
DEFAULT_QUESTION = "What are your opening hours?"
PATH = re.compile(r"^/ws/google\.ai\.generativelanguage\.(?P<version>v1|v1beta|v1alpha)"
                  r"\.GenerativeService\.BidiGenerateContent$")
# Vertex AI's: the SDK sends a service account's access token (from the Gemini emulator's token endpoint).
VERTEX_PATH = re.compile(r"^/ws/google\.cloud\.aiplatform\.(v1|v1beta1)\.LlmBidiService/BidiGenerateContent$")
_RATE = re.compile(r"rate=(\d+)")


def answer_pcm(text: str, seconds: float) -> bytes:
    """The answer's audio: 24 kHz 16-bit little-endian PCM, a tone naming ``text``."""
    t = np.arange(int(seconds * OUT_RATE)) / OUT_RATE
    return (np.sin(2 * np.pi * tone_for(text) * t) * 9000).astype("<i2").tobytes()


def _self_signed(directory: str) -> tuple[str, str]:
    """A certificate and key for 127.0.0.1 and localhost (PEM files in ``directory``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gemini-live-emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_file, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_file, key_file


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _get(obj: Any, name: str) -> Any:
    """``obj[name]`` in either spelling: the SDK sends camelCase and snake_case keys, mixed (its
    ``send_realtime_input`` sends ``{"realtime_input": {"audio": {"data", "mime_type"}}}``), and
    the service takes both, as protobuf's JSON parser does."""
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
        return obj.get(_snake(name))
    return None


def _b64decode(data: Any) -> bytes:
    """Standard or URL-safe base64 (the SDK sends the URL-safe alphabet), padded or not."""
    text = str(data or "").strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Session:
    """One connection as the server saw it."""

    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    setup: dict[str, Any] = field(default_factory=dict)         # the ``setup`` message's body
    audio_bytes: int = 0
    audio_mime_types: list[str] = field(default_factory=list)   # each new one, in order
    audio_stream_ends: int = 0
    activity_starts: int = 0
    activity_ends: int = 0
    texts: list[str] = field(default_factory=list)              # realtimeInput.text and clientContent turns
    client_contents: list[dict[str, Any]] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    barge_ins: list[float] = field(default_factory=list)        # time.monotonic() of each interrupted sent
    tool_calls: list[dict[str, Any]] = field(default_factory=list)      # functionCalls sent
    tool_responses: list[dict[str, Any]] = field(default_factory=list)  # functionResponses received
    answers: list[str] = field(default_factory=list)            # the output transcriptions sent
    unknown: list[dict[str, Any]] = field(default_factory=list)  # messages of no known kind

    @property
    def api_version(self) -> str | None:
        found = PATH.match(urlsplit(self.path).path)
        return found.group("version") if found else None

    @property
    def model(self) -> str | None:
        value = self.setup.get("model")
        return str(value) if value is not None else None

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict(_get(self.setup, "generationConfig") or {})

    @property
    def voice(self) -> str | None:
        speech = _get(self.generation_config, "speechConfig")
        voice = _get(speech, "voiceConfig")
        prebuilt = _get(voice, "prebuiltVoiceConfig")
        name = _get(prebuilt, "voiceName")
        return str(name) if name is not None else None

    @property
    def system_instruction(self) -> str | None:
        instruction = _get(self.setup, "systemInstruction")
        if instruction is None:
            return None
        if isinstance(instruction, str):
            return instruction
        return "".join(str(part.get("text", "")) for part in instruction.get("parts", []) if isinstance(part, dict))

    @property
    def input_transcription(self) -> dict[str, Any] | None:
        value = _get(self.setup, "inputAudioTranscription")
        return dict(value) if isinstance(value, dict) else None

    @property
    def output_transcription(self) -> dict[str, Any] | None:
        value = _get(self.setup, "outputAudioTranscription")
        return dict(value) if isinstance(value, dict) else None

    @property
    def realtime_input_config(self) -> dict[str, Any] | None:
        value = _get(self.setup, "realtimeInputConfig")
        return dict(value) if isinstance(value, dict) else None

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.setup.get("tools") or [])

    @property
    def function_declarations(self) -> list[dict[str, Any]]:
        return [declaration for tool in self.tools
                for declaration in (_get(tool, "functionDeclarations") or [])]


class GeminiLiveEmulator:
    def __init__(self) -> None:
        self.transcripts: dict[float, str] = {}
        self.sessions: list[Session] = []
        self.reset()
        self._directory = tempfile.mkdtemp(prefix="gemini-live-emulator-")
        self.cert_file, key_file = _self_signed(self._directory)
        # What SSL_CERT_FILE may point at: the usual roots, and this server's certificate.
        self.ca_file = os.path.join(self._directory, "ca-bundle.pem")
        with open(self.ca_file, "w") as out:
            try:
                import certifi
                with open(certifi.where()) as roots:
                    out.write(roots.read().rstrip("\n") + "\n")
            except ImportError:
                pass
            with open(self.cert_file) as cert:
                out.write(cert.read())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.server = serve(self._handle, "127.0.0.1", 0, process_request=self._authorize, ssl=context,
                            compression=None, max_size=None)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="emulator-gemini-live")
        self.thread.start()

    def reset(self) -> None:
        self.api_key = "test-gemini-key"
        self.refuse_status: int | None = None     # answer the handshake with this HTTP status
        self.silence_ms = 500                      # the caller's quiet that ends a question
        self.answer_seconds = 2.0
        self.answer_delay = 0.15                   # after the end of the question
        # question text -> (function name, args): call that function instead of answering
        self.tool_calls: dict[str, tuple[str, dict[str, Any]]] = {}
        self.close_at_question: int | None = None  # close the connection when question N ends
        self.fatal_at_question: int | None = None  # close with 1011 (internal error) when question N ends
        self.silent = False                        # transcribe the question, never answer it
        self.stall_at_question: int | None = None  # begin answer N, then say nothing more
        self.go_away = False                       # goAway {timeLeft: 1s} right after setupComplete
        self.sessions = []

    @property
    def port(self) -> int:
        return int(self.server.socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        """What ``HttpOptions(base_url=…)`` takes; the SDK makes it ``wss://127.0.0.1:PORT/ws/…``."""
        return f"http://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server: ``HttpOptions(async_client_args={"ssl": …})``."""
        return ssl.create_default_context(cafile=self.cert_file)

    def close(self) -> None:
        self.server.shutdown()
        shutil.rmtree(self._directory, ignore_errors=True)

    # -- the handshake

    def _refuse(self, connection: ServerConnection, status: int, message: str) -> Response:
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
        body = {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}}
        response = connection.respond(status, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        return response

    def _authorize(self, connection: ServerConnection, request: Any) -> Response | None:
        path = urlsplit(request.path).path
        if not PATH.match(path) and not VERTEX_PATH.match(path):
            return self._refuse(connection, 404, "Not Found")
        if self.refuse_status is not None:
            return self._refuse(connection, self.refuse_status, "emulated refusal")
        if VERTEX_PATH.match(path):
            from .gemini import ACCESS_TOKEN

            if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
                return self._refuse(connection, 401, "Request had invalid authentication credentials.")
            return None
        key = request.headers.get("x-goog-api-key") or parse_qs(urlsplit(request.path).query).get("key", [None])[0]
        if not key:
            return self._refuse(connection, 401, "Method doesn't allow unregistered callers. Please use an API key.")
        if key != self.api_key:
            return self._refuse(connection, 403, "API key not valid. Please pass a valid API key.")
        return None

    # -- the session

    def _send(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        connection.send(json.dumps(message).encode("utf-8"))  # a binary frame, as the service sends

    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        path = request.path if request else ""
        query = {name: values[-1] for name, values in parse_qs(urlsplit(path).query).items()}
        headers = {name.lower(): value for name, value in request.headers.raw_items()} if request else {}
        session = Session(path=path, headers=headers, query=query,
                          api_key=headers.get("x-goog-api-key") or query.get("key"))
        self.sessions.append(session)
        rate = IN_RATE
        pending = b""
        voiced_run = quiet_run = 0
        heard: list[np.ndarray] = []
        recent: list[np.ndarray] = []  # the last 200 ms, whatever was happening
        in_question = False
        speaking_until = 0.0
        answers = calls = 0
        try:
            for raw in connection:
                try:
                    message = json.loads(raw)
                except ValueError:
                    connection.close(1007, "Invalid JSON payload received.")
                    return
                if not isinstance(message, dict):
                    connection.close(1007, "Invalid JSON payload received.")
                    return
                if "setup" in message:
                    session.setup = dict(message["setup"] or {})
                    self._send(connection, {"setupComplete": {}})
                    if self.go_away:
                        self._send(connection, {"goAway": {"timeLeft": "1s"}})
                    continue
                content = _get(message, "clientContent")
                if isinstance(content, dict):
                    session.client_contents.append(content)
                    for turn in content.get("turns") or []:
                        text = "".join(str(part.get("text", "")) for part in _get(turn, "parts") or []
                                       if isinstance(part, dict))
                        if text:
                            session.texts.append(text)
                    continue
                tool_response = _get(message, "toolResponse")
                if isinstance(tool_response, dict):
                    responses = [response for response in _get(tool_response, "functionResponses") or []
                                 if isinstance(response, dict)]
                    session.tool_responses.extend(responses)
                    for response in responses:
                        answers += 1
                        speaking_until = self._answer(connection, session, answers, self._tool_result(response))
                    continue
                realtime = _get(message, "realtimeInput")
                if not isinstance(realtime, dict):
                    session.unknown.append(message)
                    continue
                if _get(realtime, "text"):
                    session.texts.append(str(_get(realtime, "text")))
                if _get(realtime, "audioStreamEnd"):
                    session.audio_stream_ends += 1
                if _get(realtime, "activityStart") is not None:
                    session.activity_starts += 1
                if _get(realtime, "activityEnd") is not None:
                    session.activity_ends += 1
                blobs = [_get(realtime, "audio")] + list(_get(realtime, "mediaChunks") or [])
                for blob in blobs:
                    mime = str(_get(blob, "mimeType") or "")
                    if not mime.startswith("audio/"):
                        continue
                    if not session.audio_mime_types or session.audio_mime_types[-1] != mime:
                        session.audio_mime_types.append(mime)
                    found = _RATE.search(mime)
                    rate = int(found.group(1)) if found else IN_RATE
                    data = _b64decode(_get(blob, "data"))
                    session.audio_bytes += len(data)
                    pending += data
                frame_bytes = rate * FRAME_MS // 1000 * 2
                while len(pending) >= frame_bytes:
                    samples = np.frombuffer(pending[:frame_bytes], dtype="<i2").astype(np.float64)
                    pending = pending[frame_bytes:]
                    recent = [*recent[1 - BARGE_IN_FRAMES:], samples]
                    voiced = float(np.abs(samples).mean()) > 256
                    now = time.monotonic()
                    if voiced:
                        voiced_run += 1
                        quiet_run = 0
                    else:
                        quiet_run += 1
                        voiced_run = 0
                    if voiced and now < speaking_until and voiced_run >= BARGE_IN_FRAMES:
                        speaking_until = 0.0
                        session.barge_ins.append(now)
                        self._send(connection, {"serverContent": {"interrupted": True}})
                        # what the caller says over the answer is the next question, from its start
                        in_question, heard = True, list(recent)
                        continue
                    if voiced and not in_question and now >= speaking_until:
                        in_question, heard = True, []
                    if not in_question:
                        continue
                    heard.append(samples)
                    if quiet_run * FRAME_MS < self.silence_ms:
                        continue
                    in_question = False
                    question = self._question(np.concatenate(heard), rate)
                    session.questions.append(question)
                    number = len(session.questions)
                    if self.close_at_question == number:
                        connection.close()
                        return
                    if self.fatal_at_question == number:
                        connection.close(1011, "Internal error encountered.")
                        return
                    self._send(connection, {"serverContent": {"inputTranscription": {"text": question}}})
                    if self.stall_at_question == number:
                        audio = answer_pcm(f"Answer {answers + 1}: you asked, {question}", 0.4)
                        self._send(connection, self._audio_message(audio))
                        continue
                    if self.silent:  # it heard the caller, and never answers
                        continue
                    if session.function_declarations and question in self.tool_calls:
                        name, args = self.tool_calls[question]
                        calls += 1
                        call = {"id": f"call_{calls}", "name": name, "args": dict(args)}
                        session.tool_calls.append(call)
                        self._send(connection, {"toolCall": {"functionCalls": [call]}})
                        continue
                    answers += 1
                    speaking_until = self._answer(connection, session, answers, f"you asked, {question}")
        except Exception:  # the client went away
            return

    def _question(self, pcm: np.ndarray, rate: int) -> str:
        for frequency, text in self.transcripts.items():
            if marker_strength(pcm, rate, frequency) > 0.5:
                return text
        return DEFAULT_QUESTION

    @staticmethod
    def _tool_result(response: dict[str, Any]) -> str:
        result = response.get("response")
        if isinstance(result, dict) and "result" in result:
            result = result["result"]
        if isinstance(result, str):
            return result
        return json.dumps(result, separators=(",", ":"))

    @staticmethod
    def _audio_message(audio: bytes) -> dict[str, Any]:
        return {"serverContent": {"modelTurn": {"parts": [{"inlineData": {
            "mimeType": f"audio/pcm;rate={OUT_RATE}", "data": base64.b64encode(audio).decode("ascii")}}]}}}

    def _answer(self, connection: ServerConnection, session: Session, number: int, text: str) -> float:
        time.sleep(self.answer_delay)
        reply = f"Answer {number}: {text}"
        session.answers.append(reply)
        self._send(connection, {"serverContent": {"outputTranscription": {"text": reply}}})
        audio = answer_pcm(reply, self.answer_seconds)
        step = int(CHUNK_SECONDS * OUT_RATE) * 2
        for start in range(0, len(audio), step):
            self._send(connection, self._audio_message(audio[start:start + step]))
        self._send(connection, {"serverContent": {"generationComplete": True}})
        self._send(connection, {"serverContent": {"turnComplete": True}})
        # The caller hears it in real time: it plays until about now + its length.
        return time.monotonic() + self.answer_seconds
