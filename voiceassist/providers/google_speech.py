"""Speech-to-text with Google Cloud Speech (``google-cloud-speech``), telephony model at 8 kHz.

``[google_speech] api_version = v1`` (default: no project or recognizer needed) or ``v2``
(recognizers; ``project``, ``location`` and ``recognizer``, ``_`` being the implicit one).

:meth:`GoogleSpeechToText.transcribe` recognises a whole recording (``recognize``, over
``transport``); :meth:`GoogleSpeechToText.stream` recognises while the caller speaks
(``StreamingRecognize``), always over gRPC on the same endpoint, because REST cannot stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..config import OPTIONAL_LANGUAGE_TAG, seconds, setting
from ..errors import AudioError, ConfigError, ProviderBadResponse, ProviderTimeout
from ..types import Recording, Transcript, TranscriptEvent
from .base import Provider, RequestSettings, call_sdk, import_sdk
from .google_credentials import create_client, service_account_credentials
from .sdk_errors import map_sdk_error

NAME = "google_speech"
# Google takes up to three languages besides the main one (alternative_language_codes).
MAX_ALTERNATIVES = 3
_CREDENTIALS_HINT = "set [google_speech] credentials_file or GOOGLE_APPLICATION_CREDENTIALS"
# Audio bytes per StreamingRecognizeRequest: v2 takes at most 15 KB a message (v1 25 KB).
_AUDIO_PIECE = 15_000
# v1's single_utterance "can only be used with" these models (API reference; an empty model lets
# the API choose, phone_call needs use_enhanced); with any other model, telephony included, the
# end of the utterance is the voice activity event SPEECH_ACTIVITY_END instead.
_SINGLE_UTTERANCE_MODELS = ("", "command_and_search")
# SpeechEventType values (the same numbers in v1 and v2) that mean "the caller has stopped".
_END_OF_SINGLE_UTTERANCE, _SPEECH_ACTIVITY_END = 1, 3


@dataclass(frozen=True)
class GoogleSpeechSettings(RequestSettings):
    timeout: float = seconds(5.0)
    endpoint: str = ""            # default: speech.googleapis.com
    transport: str = setting("rest", choices=("rest", "grpc"))
    credentials_file: str = ""    # else GOOGLE_APPLICATION_CREDENTIALS; "anonymous" for local emulators
    model: str = "telephony"
    language: str = setting("", pattern=OPTIONAL_LANGUAGE_TAG)  # default: [general] language
    api_version: str = setting("v1", choices=("v1", "v2"))  # v2: recognizers; needs project
    project: str = ""             # v2 only
    location: str = "global"      # v2 only; a region uses its regional endpoint
    recognizer: str = "_"         # v2 only; "_" is the implicit recognizer
    # Streaming: once the audio has ended, the seconds the recogniser has to send its last result.
    final_result_timeout: float = seconds(2.0)


class GoogleSpeechToText(Provider[GoogleSpeechSettings]):
    """Google Cloud Speech-to-Text ``recognize`` over REST (default) or gRPC, and
    ``StreamingRecognize`` over gRPC."""

    name = NAME
    Settings = GoogleSpeechSettings

    def setup(self) -> None:
        settings = self.settings
        self.version = settings.api_version
        endpoint = settings.endpoint
        # Only the version in use: each costs a few hundred milliseconds to import.
        self._speech = import_sdk(NAME, f"google.cloud.speech_{self.version}", package="google-cloud-speech",
                                  extra="google")
        if self.version == "v2":
            if not settings.project:
                raise ConfigError("[google_speech] project is required with api_version = v2")
            self.recognizer = (f"projects/{settings.project}/locations/{settings.location}"
                               f"/recognizers/{settings.recognizer}")
            if not endpoint and settings.location != "global":
                endpoint = f"{settings.location}-speech.googleapis.com"  # regional recognizers live on regional hosts
        self._endpoint = endpoint
        self._credentials = service_account_credentials(NAME, settings.credentials_file, _CREDENTIALS_HINT)
        self._client = self._create_client(settings.transport)
        # Streaming needs a gRPC client: the batch one, or one made on the first stream.
        self._streaming_client = self._client if settings.transport == "grpc" else None
        self._streaming_lock = threading.Lock()

    def _create_client(self, transport: str) -> Any:
        from google.api_core.client_options import ClientOptions

        endpoint = self._endpoint
        kwargs: dict[str, Any] = {}
        if transport == "grpc" and endpoint.startswith("http://"):
            # An http:// endpoint means a plaintext local server: api_endpoint alone would use TLS.
            import grpc

            channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
            kwargs["transport"] = self._speech.SpeechClient.get_transport_class("grpc")(channel=channel)
        else:
            if transport == "grpc":
                endpoint = endpoint.removeprefix("https://")  # a gRPC target is host[:port], no scheme
            kwargs["transport"] = transport
            if self._credentials is not None:
                kwargs["credentials"] = self._credentials
            if endpoint:
                kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
        return create_client(NAME, self._speech.SpeechClient, _CREDENTIALS_HINT, **kwargs)

    def _recognition_config(self, sample_rate: int) -> Any:
        """LINEAR16 mono at ``sample_rate``, the configured model and language (with up to three
        other languages the caller may speak, when the call detects its language), punctuation."""
        speech = self._speech
        others = [tag for tag in self.context.alternative_languages if tag != self.language][:MAX_ALTERNATIVES]
        if self.version == "v2":
            types = speech.types
            return types.RecognitionConfig(
                explicit_decoding_config=types.ExplicitDecodingConfig(
                    encoding=types.ExplicitDecodingConfig.AudioEncoding.LINEAR16,
                    sample_rate_hertz=sample_rate, audio_channel_count=1),
                language_codes=[self.language, *others], model=self.settings.model,
                features=types.RecognitionFeatures(enable_automatic_punctuation=True))
        return speech.RecognitionConfig(
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=sample_rate,
            audio_channel_count=1,
            language_code=self.language,
            alternative_language_codes=others,
            model=self.settings.model,
            enable_automatic_punctuation=True,
        )

    def _request(self, recording: Recording) -> dict[str, Any]:
        config = self._recognition_config(recording.sample_rate)
        if self.version == "v2":
            return {"request": self._speech.types.RecognizeRequest(recognizer=self.recognizer, config=config,
                                                                   content=recording.pcm)}
        return {"config": config, "audio": self._speech.RecognitionAudio(content=recording.pcm)}

    def transcribe(self, recording: Recording) -> Transcript:
        request = self._request(recording)
        # retry=None: v1's default retries 503s for up to 5000 s; v2's default timeout is infinite.
        response = call_sdk(NAME, lambda seconds: self._client.recognize(**request, timeout=seconds, retry=None),
                            timeout=self.settings.timeout, retries=self.settings.retries, hint=_CREDENTIALS_HINT)
        parts = [r.alternatives[0].transcript.strip() for r in response.results if r.alternatives]
        text = " ".join(p for p in parts if p)
        confidence = None
        if response.results and response.results[0].alternatives:
            confidence = float(response.results[0].alternatives[0].confidence) or None
        # The language Google heard: said when alternatives were offered (else the one asked for).
        heard = next((str(r.language_code) for r in response.results if r.alternatives and r.language_code), "")
        return Transcript(text=text, confidence=confidence, language=heard)

    # -- streaming ---------------------------------------------------------------------------
    def stream(self, audio: Iterable[bytes], sample_rate: int) -> Iterator[TranscriptEvent]:
        """Interim and final results while the caller speaks (see
        :meth:`~voiceassist.providers.base.StreamingSpeechToText.stream`): interim results on,
        the end of the utterance from v1 ``single_utterance`` (models that allow it) or voice
        activity events (v1 with other models, v2). Not retried: the audio already sent is gone."""
        if not 8000 <= sample_rate <= 48000:
            raise AudioError(f"{NAME}: cannot stream audio at {sample_rate} Hz (8000 to 48000 Hz)")
        client = self._grpc_client()
        return self._recognise_live(client, audio, sample_rate)

    def _grpc_client(self) -> Any:
        with self._streaming_lock:
            if self._streaming_client is None:
                self._streaming_client = self._create_client("grpc")
            return self._streaming_client

    def _streaming_requests(self, sample_rate: int) -> tuple[Any, Callable[[bytes], Any]]:
        """The stream's first request (its configuration) and how to wrap a piece of audio."""
        speech = self._speech
        config = self._recognition_config(sample_rate)
        if self.version == "v2":
            types = speech.types
            features = types.StreamingRecognitionFeatures(interim_results=True, enable_voice_activity_events=True)
            first = types.StreamingRecognizeRequest(
                recognizer=self.recognizer,
                streaming_config=types.StreamingRecognitionConfig(config=config, streaming_features=features))
            return first, lambda piece: types.StreamingRecognizeRequest(audio=piece)
        single_utterance = self.settings.model in _SINGLE_UTTERANCE_MODELS
        streaming = speech.StreamingRecognitionConfig(config=config, interim_results=True,
                                                      single_utterance=single_utterance,
                                                      enable_voice_activity_events=not single_utterance)
        first = speech.StreamingRecognizeRequest(streaming_config=streaming)
        return first, lambda piece: speech.StreamingRecognizeRequest(audio_content=piece)

    def _recognise_live(self, client: Any, audio: Iterable[bytes], sample_rate: int) -> Iterator[TranscriptEvent]:
        import grpc
        from google.api_core import exceptions

        first, audio_request = self._streaming_requests(sample_rate)
        timeout = self.settings.final_result_timeout
        canceller = _Canceller(timeout)
        feed = _AudioFeed(audio, first, audio_request, on_end=canceller.arm,
                          on_error=lambda: canceller.cancel("audio"))
        utterance_ended = False
        try:
            # The transport's own StreamingRecognize callable, not the client method: that one
            # waits for the first response before it returns, and a call that has not returned
            # cannot be cancelled when the recogniser never answers.
            call = client.transport.streaming_recognize(iter(feed))
            canceller.attach(call)
            for response in call:
                for event in self._events(response, feed.sent_ms(sample_rate)):
                    if event.end_of_utterance and not utterance_ended:
                        utterance_ended = True
                        feed.stop()  # the API reads no more audio: half-close, then its last results
                    yield event
        except Exception as exc:
            if feed.error is not None:
                raise feed.error from None
            if canceller.reason == "timeout":
                raise ProviderTimeout(f"{NAME}: no final result within {timeout:g} s after the audio ended "
                                      f"([google_speech] final_result_timeout)", provider=NAME) from None
            if isinstance(exc, grpc.RpcError):  # the call's status, as the client methods raise it
                exc = exceptions.from_grpc_error(exc)  # type: ignore[no-untyped-call]
            raise map_sdk_error(NAME, exc, hint=_CREDENTIALS_HINT) from None
        finally:
            canceller.close()  # and, when the consumer stopped early, the call: the server stops too
        if feed.error is not None:
            raise feed.error
        if not feed.audio_ended and not utterance_ended:
            raise ProviderBadResponse(f"{NAME}: the recogniser ended the stream while the audio went on",
                                      provider=NAME)

    def _events(self, response: Any, sent_ms: int) -> list[TranscriptEvent]:
        """The events of one StreamingRecognizeResponse (an offset the server left out is the
        audio sent so far)."""
        from google.api_core import exceptions

        error = getattr(response, "error", None)  # v1 may report a failure in the message
        if error is not None and error.code:
            raise map_sdk_error(NAME, exceptions.from_grpc_status(error.code, error.message),  # type: ignore[no-untyped-call]
                                hint=_CREDENTIALS_HINT)
        events: list[TranscriptEvent] = []
        if int(response.speech_event_type) in (_END_OF_SINGLE_UTTERANCE, _SPEECH_ACTIVITY_END):
            when = response.speech_event_time if self.version == "v1" else response.speech_event_offset
            events.append(TranscriptEvent("", end_of_utterance=True, offset_ms=_ms(when) or sent_ms))
        results = [r for r in response.results if r.alternatives]
        for result in (r for r in results if r.is_final):
            top = result.alternatives[0]
            events.append(TranscriptEvent(top.transcript.strip(), is_final=True, confidence=float(top.confidence) or None,
                                          offset_ms=self._result_end(result) or sent_ms))
        interim = [r for r in results if not r.is_final]
        # Google splits a guess into a steadier start and a shakier end: one guess, as steady as
        # its shakiest part (0 means "not given").
        text = " ".join(part for r in interim if (part := r.alternatives[0].transcript.strip()))
        if text:
            stabilities = [float(r.stability) for r in interim if r.stability]
            events.append(TranscriptEvent(text, stability=min(stabilities) if stabilities else None,
                                          offset_ms=self._result_end(interim[-1]) or sent_ms))
        return events

    def _result_end(self, result: Any) -> int:
        return _ms(result.result_end_time if self.version == "v1" else result.result_end_offset)


def _ms(offset: Any) -> int:
    """Milliseconds of a protobuf Duration (a timedelta once proto-plus has it; zero when unset)."""
    return int(offset.total_seconds() * 1000)


class _Canceller:
    """Cancels a gRPC call from another thread: ``seconds`` after :meth:`arm` (the audio ended
    and the recogniser had its time), or at once; the call may be attached after either."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.reason = ""
        self._call: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def attach(self, call: Any) -> None:
        with self._lock:
            self._call = call
            cancelled = bool(self.reason)
        if cancelled:
            call.cancel()

    def arm(self) -> None:
        with self._lock:
            if self._timer is not None or self.reason:
                return
            self._timer = threading.Timer(self.seconds, self.cancel, args=("timeout",))
            self._timer.daemon = True
            self._timer.start()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.reason:
                return
            self.reason = reason
            call = self._call
        if call is not None:
            call.cancel()  # a no-op on a call that has already ended

    def close(self) -> None:
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
        self.cancel("closed")


class _AudioFeed:
    """The requests of one stream, read on gRPC's sending thread: the configuration, then the
    caller's audio in pieces the API accepts, until the audio ends or :meth:`stop`. An exception
    from the audio is kept (:attr:`error`) for the consumer's thread, never thrown into gRPC's."""

    def __init__(self, audio: Iterable[bytes], first: Any, request: Callable[[bytes], Any], *,
                 on_end: Callable[[], None], on_error: Callable[[], None]) -> None:
        self._audio = audio
        self._first = first
        self._request = request
        self._on_end = on_end
        self._on_error = on_error
        self._stopped = threading.Event()
        self.error: BaseException | None = None
        self.audio_ended = False    # the audio ran out (or failed), as opposed to a stop
        self.sent_bytes = 0

    def stop(self) -> None:
        self._stopped.set()

    def sent_ms(self, sample_rate: int) -> int:
        return self.sent_bytes * 1000 // (2 * sample_rate)

    def __iter__(self) -> Iterator[Any]:
        yield self._first
        try:
            chunks = iter(self._audio)
            while not self._stopped.is_set():
                try:
                    chunk = next(chunks)  # a live source has one every 20 ms: a stop is seen within that
                except StopIteration:
                    self.audio_ended = True
                    return
                except Exception as exc:  # e.g. the caller hung up: raised again by stream()
                    self.error = exc
                    self.audio_ended = True
                    self._on_error()
                    return
                if self._stopped.is_set():
                    return
                for start in range(0, len(chunk), _AUDIO_PIECE):
                    piece = bytes(chunk[start:start + _AUDIO_PIECE])
                    self.sent_bytes += len(piece)
                    yield self._request(piece)
        finally:
            self._on_end()  # half-closed: the recogniser's time for its last result starts now
