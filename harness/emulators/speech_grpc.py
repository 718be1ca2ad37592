"""Google Cloud Speech-to-Text over gRPC: ``google.cloud.speech.v1.Speech/StreamingRecognize`` and
``google.cloud.speech.v2.Speech/StreamingRecognize``, on a plaintext ``grpc.server`` that
(de)serialises with the SDK's own message classes.

Not a recogniser, like the REST emulator (:mod:`.speech`): the transcript is the one registered
for the marker tone at the start of the speech (else ``default_transcript``). What it does
emulate is the timing of a live stream, judged on the audio as it arrives:

* interim results word by word while speech goes on (one word more per ``word_interval``
  seconds of loud audio);
* the final result once ``final_delay`` seconds of quiet audio follow the last loud 20 ms frame
  (or at once when the client half-closes), preceded, when the config asks for them, by the
  end-of-utterance event: ``END_OF_SINGLE_UTTERANCE`` (v1 ``single_utterance``, after which the
  server closes the stream) or ``SPEECH_ACTIVITY_END`` (voice activity events, which also give
  ``SPEECH_ACTIVITY_BEGIN`` at the first loud frame);
* silence gives no response at all, as the real API does.

It checks what the API reference says it rejects (audio in the first message, a config later,
an oversized audio message, v1 ``single_utterance`` with a model that does not support it) with
``INVALID_ARGUMENT``, and records every stream (its config, the audio with arrival times, the
responses with their send times, how it ended). A per-stream script can fail it: :class:`Abort`
(an error status at the start or after some audio), :class:`~.base.Hang` (read the audio, say
nothing, then close) and :class:`Sever` (cut the TCP connection mid-stream: the emulator's port
is a relay in front of the gRPC server so that a connection can really be dropped).
"""

from __future__ import annotations

import datetime as dt
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.cloud import speech_v1, speech_v2
from google.rpc import status_pb2

from .base import Hang
from .speech import marker_strength
from .relay import TcpRelay

LOUD = 256                      # mean |sample| of a 20 ms frame that counts as speech (as speech.py)
MARKER_WINDOW = 0.5             # seconds from the start of speech searched for the marker tone
RECOGNIZER = re.compile(r"^projects/[^/]+/locations/[^/]+/recognizers/[^/]+$")
# Per-message audio limits of the API reference (v1: 25 KB, v2: 15 KB).
MAX_AUDIO_BYTES = {"v1": 25 * 1024, "v2": 15 * 1024}
# v1 single_utterance "can only be used with" these models (an empty model lets the API choose);
# phone_call only with use_enhanced.
SINGLE_UTTERANCE_MODELS = {"", "command_and_search"}


@dataclass
class Abort:
    """End the stream with gRPC status ``code`` once ``after`` seconds of audio have arrived
    (0: as soon as the config has been read). ``in_response`` (v1): report it in a response's
    ``error`` field instead, then close the stream normally."""

    code: grpc.StatusCode
    message: str = "emulated failure"
    after: float = 0.0
    in_response: bool = False


@dataclass
class Sever:
    """Cut the TCP connection under the stream once ``after`` seconds of audio have arrived."""

    after: float = 0.0


Action = Abort | Hang | Sever


@dataclass
class StreamRecord:
    """One StreamingRecognize call as the emulator saw it."""

    version: str
    metadata: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)   # StreamingRecognitionConfig, enum names
    recognizer: str = ""                                    # v2
    sample_rate: int = 0
    chunks: list[tuple[float, bytes]] = field(default_factory=list)      # (monotonic arrival, audio)
    responses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (monotonic send, response)
    half_closed_at: float | None = None
    ended: str = ""             # closed | half-closed | cancelled | aborted <CODE> | severed | invalid

    @property
    def audio(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / 2 / self.sample_rate if self.sample_rate else 0.0

    @property
    def events(self) -> list[str]:
        """The speech events sent, in order (``SPEECH_ACTIVITY_BEGIN`` ...)."""
        names = (response.get("speech_event_type", "") for _, response in self.responses)
        return [name for name in names if name and not name.endswith("UNSPECIFIED")]


class _Invalid(Exception):
    """A request the real API answers with INVALID_ARGUMENT."""


class _Api:
    """What differs between v1 and v2: message classes, where the config lives, field names."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.types = speech_v1 if version == "v1" else speech_v2.types
        self.request = self.types.StreamingRecognizeRequest
        self.response = self.types.StreamingRecognizeResponse
        self.events = self.response.SpeechEventType

    def read_config(self, first: Any, record: StreamRecord) -> tuple[bool, bool, bool, str]:
        """(interim results, single utterance, voice activity events, language) of the first
        message, which is recorded; raises :class:`_Invalid` for what the API rejects."""
        if self.version == "v1":
            if first.audio_content or "streaming_config" not in first:
                raise _Invalid("the first StreamingRecognizeRequest must carry streaming_config and no audio_content")
            streaming = first.streaming_config
            config = streaming.config
            record.config = type(streaming).to_dict(streaming, use_integers_for_enums=False)
            encoding, rate = config.encoding.name, config.sample_rate_hertz
            model = config.model
            if streaming.single_utterance and model not in SINGLE_UTTERANCE_MODELS and not (
                    model == "phone_call" and config.use_enhanced):
                raise _Invalid(f"single_utterance is not supported for model {model!r}")
            flags = streaming.interim_results, streaming.single_utterance, streaming.enable_voice_activity_events
            language = config.language_code
        else:
            if first.audio or "streaming_config" not in first:
                raise _Invalid("the first StreamingRecognizeRequest must carry recognizer and streaming_config, no audio")
            if not RECOGNIZER.match(first.recognizer):
                raise _Invalid(f"invalid recognizer {first.recognizer!r}")
            record.recognizer = first.recognizer
            streaming = first.streaming_config
            record.config = type(streaming).to_dict(streaming, use_integers_for_enums=False)
            decoding = streaming.config.explicit_decoding_config
            encoding, rate = decoding.encoding.name, decoding.sample_rate_hertz
            features = streaming.streaming_features
            flags = features.interim_results, False, features.enable_voice_activity_events
            language = streaming.config.language_codes[0] if streaming.config.language_codes else ""
        if encoding != "LINEAR16":
            raise _Invalid(f"the emulator decodes LINEAR16 only, not {encoding}")
        if not 8000 <= rate <= 48000:
            raise _Invalid(f"sample_rate_hertz must be 8000 to 48000, not {rate}")
        record.sample_rate = rate
        return (*flags, language)

    def audio_of(self, request: Any) -> bytes:
        if "streaming_config" in request:
            raise _Invalid("only the first StreamingRecognizeRequest may carry streaming_config")
        audio = bytes(request.audio_content if self.version == "v1" else request.audio)
        if len(audio) > MAX_AUDIO_BYTES[self.version]:
            raise _Invalid(f"audio message of {len(audio)} bytes is over the limit of {MAX_AUDIO_BYTES[self.version]}")
        return audio

    def result(self, text: str, *, final: bool, stability: float, confidence: float, end: float,
               language: str) -> Any:
        alternative = {"transcript": text, **({"confidence": confidence} if final else {})}
        result: dict[str, Any] = {"alternatives": [alternative], "is_final": final,
                                  "language_code": language.lower()}
        if not final:
            result["stability"] = stability
        result["result_end_time" if self.version == "v1" else "result_end_offset"] = _duration(end)
        return self.response(results=[result])

    def event(self, name: str, offset: float) -> Any:
        time_field = "speech_event_time" if self.version == "v1" else "speech_event_offset"
        return self.response({"speech_event_type": self.events[name], time_field: _duration(offset)})


def _duration(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=round(seconds, 3))


class SpeechGrpcEmulator:
    def __init__(self) -> None:
        self.transcripts: dict[float, str] = {}     # marker tone Hz -> transcript
        self.default_transcript = "What are your opening hours?"
        self.confidence = 0.92
        self.final_delay = 0.150                    # seconds of quiet audio before the final result
        self.word_interval = 0.25                   # seconds of speech per interim word
        self.streams: list[StreamRecord] = []
        self.script: deque[Action] = deque()
        self._lock = threading.Lock()
        handlers = [self._handler("v1"), self._handler("v2")]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers(handlers)
        grpc_port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self._relay = TcpRelay(grpc_port, "speech-grpc")

    # -- the test's side ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._relay.port

    @property
    def endpoint(self) -> str:
        """``[google_speech] endpoint`` for this emulator (http://: plaintext gRPC)."""
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *actions: Action) -> None:
        with self._lock:
            self.script.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self.streams.clear()
            self.script.clear()
            self.transcripts.clear()
            self.default_transcript = "What are your opening hours?"
            self.final_delay = 0.150
            self.word_interval = 0.25

    def close(self) -> None:
        self._relay.close()
        self.server.stop(grace=0)

    # -- the server's side --------------------------------------------------------------------
    def _handler(self, version: str) -> grpc.GenericRpcHandler:
        api = _Api(version)

        def streaming_recognize(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            record = StreamRecord(version, metadata)
            # When the RPC ends without the handler having said how, the client cancelled it
            # (perhaps while the handler waited to send a response, where it is never resumed).
            context.add_callback(lambda: setattr(record, "ended", record.ended or "cancelled"))
            with self._lock:
                self.streams.append(record)
                action = self.script.popleft() if self.script else None
            yield from self._serve(api, record, action, requests, context)

        method = grpc.stream_stream_rpc_method_handler(
            streaming_recognize,
            request_deserializer=api.request.deserialize,
            response_serializer=api.response.serialize)
        return grpc.method_handlers_generic_handler(f"google.cloud.speech.{version}.Speech",
                                                    {"StreamingRecognize": method})

    def _serve(self, api: _Api, record: StreamRecord, action: Action | None, requests: Iterator[Any],
               context: grpc.ServicerContext) -> Iterator[Any]:
        def send(response: Any) -> Any:
            record.responses.append((time.monotonic(), type(response).to_dict(response, use_integers_for_enums=False)))
            return response

        def abort(code: grpc.StatusCode, message: str, ended: str) -> None:
            record.ended = ended
            context.abort(code, message)

        def fail(failure: Abort) -> Iterator[Any]:
            if failure.in_response:
                record.ended = f"error in response {failure.code.name}"
                yield send(api.response(error=status_pb2.Status(code=failure.code.value[0], message=failure.message)))
                return
            abort(failure.code, failure.message, f"aborted {failure.code.name}")

        try:
            first = next(requests)
        except (StopIteration, grpc.RpcError):
            record.ended = "cancelled"
            return
        try:
            interim, single_utterance, activity_events, language = api.read_config(first, record)
        except _Invalid as exc:
            abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "invalid")
        if isinstance(action, Abort) and action.after <= 0:
            yield from fail(action)
            return
        if isinstance(action, Sever) and action.after <= 0:
            record.ended = "severed"
            self._relay.sever()
            return

        # The requests are read on their own thread so that a response can be due between two.
        arrivals: queue.Queue[tuple[str, float, bytes]] = queue.Queue()

        def read() -> None:
            try:
                for request in requests:
                    try:
                        arrivals.put(("audio", time.monotonic(), api.audio_of(request)))
                    except _Invalid as exc:
                        arrivals.put(("invalid", time.monotonic(), str(exc).encode()))
                        return
                arrivals.put(("end", time.monotonic(), b""))
            except grpc.RpcError:
                arrivals.put(("gone", time.monotonic(), b""))

        threading.Thread(target=read, daemon=True).start()
        rate = record.sample_rate
        frame = rate // 50                   # samples in 20 ms
        frame_seconds = frame / rate
        audio = bytearray()
        received = 0.0                       # seconds of audio so far
        speech_start: float | None = None    # audio offset of the first loud frame
        speech_end = 0.0                     # audio offset of the end of the last loud frame
        loud_seconds = 0.0
        words: list[str] = []
        shown = 0
        final_sent = False
        hang_until = time.monotonic() + action.seconds if isinstance(action, Hang) else None

        def transcript() -> list[str]:
            if not words:
                assert speech_start is not None
                start = int(speech_start * rate) * 2
                head = np.frombuffer(bytes(audio[start: start + int(MARKER_WINDOW * rate) * 2]), dtype="<i2")
                head = head.astype(np.float64)
                text = self.default_transcript
                if self.transcripts:
                    strengths = {hz: marker_strength(head, rate, hz) for hz in self.transcripts}
                    hz, strength = max(strengths.items(), key=lambda item: item[1])
                    if strength > 0.5:
                        text = self.transcripts[hz]
                words.extend(text.split())
            return words

        def finish() -> Iterator[Any]:
            """The end of the utterance: its event (when asked for) and the final result."""
            if single_utterance:
                yield send(api.event("END_OF_SINGLE_UTTERANCE", received))
            elif activity_events:
                yield send(api.event("SPEECH_ACTIVITY_END", speech_end))
            yield send(api.result(" ".join(transcript()), final=True, stability=0.0, confidence=self.confidence,
                                  end=speech_end, language=language))

        while True:
            if hang_until is not None and time.monotonic() >= hang_until:
                record.ended = "closed"
                return
            try:
                kind, at, data = arrivals.get(timeout=0.05)
            except queue.Empty:
                if not context.is_active():
                    record.ended = "cancelled"
                    return
                continue
            if kind == "gone":
                record.ended = "cancelled"
                return
            if kind == "invalid":
                abort(grpc.StatusCode.INVALID_ARGUMENT, data.decode(), "invalid")
            if kind == "end" and not context.is_active():
                record.ended = "cancelled"
                return
            if kind == "end" and hang_until is not None:
                record.half_closed_at = at  # and still say nothing
                continue
            if kind == "end":
                record.half_closed_at = at
                if speech_start is not None and not final_sent:
                    yield from finish()
                record.ended = record.ended or "half-closed"
                return
            record.chunks.append((at, data))
            analysed = len(audio) // 2 // frame * frame      # samples in whole frames already judged
            audio.extend(data)
            received = len(audio) / 2 / rate
            if isinstance(action, Abort) and received >= action.after:
                yield from fail(action)
                return
            if isinstance(action, Sever) and received >= action.after:
                record.ended = "severed"
                self._relay.sever()
                return
            if hang_until is not None:
                continue
            for start in range(analysed, len(audio) // 2 - frame + 1, frame):
                offset = start / rate
                samples = np.frombuffer(bytes(audio[start * 2:(start + frame) * 2]), dtype="<i2").astype(np.float64)
                if np.abs(samples).mean() <= LOUD:
                    quiet = offset + frame_seconds - speech_end
                    if speech_start is not None and not final_sent and quiet >= self.final_delay:
                        yield from finish()
                        final_sent = True
                        if single_utterance:
                            # the API "will not process additional audio" and closes the stream
                            record.ended = "closed"
                            return
                    continue
                if final_sent:
                    continue  # one utterance per stream: later speech is not recognised
                if speech_start is None:
                    speech_start = offset
                    if activity_events:
                        yield send(api.event("SPEECH_ACTIVITY_BEGIN", offset))
                speech_end = offset + frame_seconds
                loud_seconds += frame_seconds
                # words once the marker has been heard, then one more every word_interval of speech
                if (interim and speech_end - speech_start >= MARKER_WINDOW and shown < len(transcript())
                        and loud_seconds - MARKER_WINDOW >= shown * self.word_interval):
                    shown += 1
                    yield send(api.result(" ".join(words[:shown]), final=False, stability=round(0.9 * shown / len(words), 2),
                                          confidence=0.0, end=speech_end, language=language))
