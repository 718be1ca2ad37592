"""Google Cloud Text-to-Speech over gRPC: ``google.cloud.texttospeech.v1.TextToSpeech/StreamingSynthesize``,
on a plaintext ``grpc.server`` that (de)serialises with the SDK's own message classes.

As the REST emulator (:mod:`.google_tts`), it answers each text with its tone (see
:func:`harness.emulators.openai_api.tone_for`), ``seconds`` long, here sent back in chunks of
``chunk_seconds``: the first ``first_chunk_delay`` seconds after the text arrived, the next ones
``chunk_interval`` apart, encoded as asked (PCM: headerless 16-bit; MULAW: headerless μ-law).

It checks what the API reference says it rejects (no ``streaming_config`` first, a config later,
an encoding streaming does not support, an input over 5000 bytes) with ``INVALID_ARGUMENT``, and,
like the real service, refuses to stream voices that cannot (only Chirp 3 HD voices can, as
:attr:`GoogleTTSGrpcEmulator.streams_voice` decides). Every stream is recorded (its config, its
texts, the chunks sent with their times, how it ended: ``cancelled`` when the client cancelled
it). A per-stream script can fail it: :class:`Abort` (an error status after some chunks).

REST and gRPC share one port, as on ``texttospeech.googleapis.com``: the emulator's port is a
relay that sends HTTP/2 connections (the client preface) to the gRPC server and the others to
the REST emulator it was given, so one ``[google_tts] endpoint`` serves ``synthesize`` and
``synthesize_stream``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import texttospeech_v1 as tts

from . import mulaw
from .google_tts import MAX_INPUT_BYTES, GoogleTTSEmulator
from .openai_api import tone_for, tone_pcm
from .relay import TcpRelay

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# What StreamingAudioConfig accepts ("Streaming supports PCM, ALAW, MULAW and OGG_OPUS").
STREAMING_ENCODINGS = {"PCM", "ALAW", "MULAW", "OGG_OPUS"}
DEFAULT_RATE = 24000            # the service's rate when the config names none


@dataclass
class Abort:
    """End the stream with gRPC status ``code`` once ``after`` chunks have been sent (0: as soon as
    the config has been read)."""

    code: grpc.StatusCode
    message: str = "emulated failure"
    after: int = 0


@dataclass
class StreamRecord:
    """One StreamingSynthesize call as the emulator saw it."""

    metadata: dict[str, str]
    started: float = 0.0                                           # monotonic time of the call
    config: dict[str, Any] = field(default_factory=dict)           # StreamingSynthesizeConfig, enum names
    texts: list[str] = field(default_factory=list)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (monotonic send, audio)
    planned_chunks: int = 0                                        # chunks the texts so far make
    ended: str = ""             # completed | cancelled | aborted <CODE> | invalid | cannot stream

    @property
    def audio(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)


class _Invalid(Exception):
    """A request the real API answers with INVALID_ARGUMENT."""


class _Router(TcpRelay):
    """The emulator's port: each connection goes to the gRPC server when it opens with the
    HTTP/2 client preface, else to the REST server."""

    def __init__(self, grpc_port: int, rest_port: int | None) -> None:
        self.rest_port = rest_port
        super().__init__(grpc_port, "google-tts")

    def upstream(self, downstream: socket.socket) -> socket.socket:
        head = b""
        while len(head) < len(HTTP2_PREFACE) and HTTP2_PREFACE.startswith(head):
            data = downstream.recv(len(HTTP2_PREFACE) - len(head))
            if not data:
                break
            head += data
        port = self.target_port if head == HTTP2_PREFACE else self.rest_port
        if port is None or not head:
            raise OSError("nothing to route to")
        upstream = socket.create_connection(("127.0.0.1", port))
        upstream.sendall(head)
        return upstream


def chirp3_hd(voice: str) -> bool:
    """Whether the service streams ``voice``: the Chirp 3 HD voices (``en-US-Chirp3-HD-Aoede``)."""
    return "-Chirp3-HD-" in voice


class GoogleTTSGrpcEmulator:
    def __init__(self, rest: GoogleTTSEmulator | None = None) -> None:
        self.rest = rest
        self.seconds = 1.5                  # of tone per text
        self.chunk_seconds = 0.1            # of audio per response
        self.first_chunk_delay = 0.2        # text arrived -> its first chunk
        self.chunk_interval = 0.05          # between the following chunks
        self.streams_voice: Callable[[str], bool] = chirp3_hd
        self.streams: list[StreamRecord] = []
        self.script: deque[Abort] = deque()
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers([self._handler()])
        grpc_port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self._router = _Router(grpc_port, rest.port if rest is not None else None)

    # -- the test's side ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._router.port

    @property
    def endpoint(self) -> str:
        """``[google_tts] endpoint`` for this emulator (http://: plaintext, REST and gRPC)."""
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *actions: Abort) -> None:
        with self._lock:
            self.script.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self.streams.clear()
            self.script.clear()
        self.seconds = 1.5
        self.chunk_seconds = 0.1
        self.first_chunk_delay = 0.2
        self.chunk_interval = 0.05
        self.streams_voice = chirp3_hd

    def audio_for(self, text: str, encoding: str = "PCM", rate: int = DEFAULT_RATE) -> bytes:
        """The audio the emulator streams for ``text``, all chunks joined."""
        pcm = tone_pcm(tone_for(text), self.seconds, rate)
        return mulaw.encode(pcm) if encoding == "MULAW" else pcm

    def close(self) -> None:
        self._router.close()
        self.server.stop(grace=0)

    # -- the server's side --------------------------------------------------------------------
    def _handler(self) -> grpc.GenericRpcHandler:
        def streaming_synthesize(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            record = StreamRecord(metadata, started=time.monotonic())
            # An RPC that ends without the handler having said how was cancelled by the client
            # (perhaps while the handler waited to send a response, where it is never resumed).
            context.add_callback(lambda: setattr(record, "ended", record.ended or "cancelled"))
            with self._lock:
                self.streams.append(record)
                action = self.script.popleft() if self.script else None
            yield from self._serve(record, action, requests, context)

        method = grpc.stream_stream_rpc_method_handler(
            streaming_synthesize,
            request_deserializer=tts.StreamingSynthesizeRequest.deserialize,
            response_serializer=tts.StreamingSynthesizeResponse.serialize)
        return grpc.method_handlers_generic_handler("google.cloud.texttospeech.v1.TextToSpeech",
                                                    {"StreamingSynthesize": method})

    def _read_config(self, first: Any, record: StreamRecord) -> tuple[str, int]:
        """(encoding, rate) of the first message, which is recorded; raises :class:`_Invalid`."""
        if "streaming_config" not in first:
            raise _Invalid("Malordered Data Received. Expected streaming_config but received input. "
                           "Send exactly one config, followed by text input")
        config = first.streaming_config
        record.config = type(config).to_dict(config, use_integers_for_enums=False)
        audio = config.streaming_audio_config
        encoding = audio.audio_encoding.name if "streaming_audio_config" in config else "PCM"
        if encoding == "AUDIO_ENCODING_UNSPECIFIED":
            encoding = "PCM"
        if encoding not in STREAMING_ENCODINGS:
            raise _Invalid(f"Streaming does not support audio encoding {encoding}")
        if encoding not in ("PCM", "MULAW"):
            raise _Invalid(f"the emulator does not encode {encoding}")
        return encoding, int(audio.sample_rate_hertz or DEFAULT_RATE)

    def _text_of(self, request: Any) -> str:
        if "streaming_config" in request:
            raise _Invalid("Malordered Data Received. Send exactly one config, followed by text input")
        text = str(request.input.text)
        if not text:
            raise _Invalid("Streaming input must carry text")
        if len(text.encode()) > MAX_INPUT_BYTES:
            raise _Invalid(f"Input text is longer than the limit of {MAX_INPUT_BYTES} bytes")
        return text

    def _serve(self, record: StreamRecord, action: Abort | None, requests: Iterator[Any],
               context: grpc.ServicerContext) -> Iterator[Any]:
        def abort(code: grpc.StatusCode, message: str, ended: str) -> None:
            record.ended = ended
            context.abort(code, message)

        def wait(seconds: float) -> bool:
            """Sleep; False once the client has gone."""
            until = time.monotonic() + seconds
            while (left := until - time.monotonic()) > 0:
                if not context.is_active():
                    return False
                time.sleep(min(left, 0.01))
            return context.is_active()

        try:
            first = next(requests)
        except (StopIteration, grpc.RpcError):
            record.ended = "cancelled"
            return
        try:
            encoding, rate = self._read_config(first, record)
        except _Invalid as exc:
            abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "invalid")
        voice = str(first.streaming_config.voice.name)
        if not self.streams_voice(voice):
            abort(grpc.StatusCode.INVALID_ARGUMENT,
                  f"Voice '{voice}' does not support streaming synthesis; use a Chirp 3 HD voice", "cannot stream")
        if action is not None and action.after <= 0:
            abort(action.code, action.message, f"aborted {action.code.name}")
        sent = 0
        chunk_bytes = int(self.chunk_seconds * rate) * (1 if encoding == "MULAW" else 2)
        try:
            for request in requests:
                try:
                    text = self._text_of(request)
                except _Invalid as exc:
                    abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "invalid")
                record.texts.append(text)
                audio = self.audio_for(text, encoding, rate)
                pieces = [audio[i:i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]
                record.planned_chunks += len(pieces)
                for index, piece in enumerate(pieces):
                    delay = self.first_chunk_delay if index == 0 else self.chunk_interval
                    if not wait(delay):
                        record.ended = record.ended or "cancelled"
                        return
                    if action is not None and sent >= action.after:
                        abort(action.code, action.message, f"aborted {action.code.name}")
                    record.chunks.append((time.monotonic(), piece))
                    sent += 1
                    yield tts.StreamingSynthesizeResponse(audio_content=piece)
        except grpc.RpcError:
            record.ended = record.ended or "cancelled"
            return
        record.ended = record.ended or "completed"
