"""Text-to-speech with Google Cloud Text-to-Speech (``google-cloud-texttospeech``).

:meth:`GoogleTextToSpeech.synthesize` asks ``text:synthesize`` (REST) for 8 kHz MULAW, which is
what Asterisk plays: no resampling, no ffmpeg run. :meth:`GoogleTextToSpeech.synthesize_stream`
(the real-time conversation) uses ``StreamingSynthesize``, always over gRPC on the same endpoint
because REST cannot stream, and yields 16 kHz PCM as it arrives; only some voices stream (Chirp 3
HD), and a voice the API refuses to stream is synthesised whole instead. Uses the same
service-account credentials as Google Speech (``[google_tts] credentials_file`` falls back to
``[google_speech] credentials_file``, then ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from .. import deadline
from ..config import OPTIONAL_LANGUAGE_TAG, setting
from ..errors import ProviderBadResponse, ProviderError, ProviderTimeout
from ..types import SpeechAudio
from .base import Provider, RequestSettings, call_sdk, import_sdk, synthesize_in_parts, with_retries
from .google_credentials import create_client, service_account_credentials
from .sdk_errors import map_sdk_error

NAME = "google_tts"
_CREDENTIALS_HINT = "set [google_tts] or [google_speech] credentials_file, or GOOGLE_APPLICATION_CREDENTIALS"
# The API limits input to 5000 bytes; characters here, with room for multi-byte text.
MAX_INPUT_CHARS = 1500
# Streamed speech: headerless 16-bit PCM at a wideband leg's rate (a narrowband one resamples).
STREAM_SAMPLE_RATE = 16000

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoogleTextToSpeechSettings(RequestSettings):
    endpoint: str = ""            # default: texttospeech.googleapis.com
    credentials_file: str = ""    # else [google_speech] credentials_file, else GOOGLE_APPLICATION_CREDENTIALS
    voice: str = ""               # e.g. en-US-Chirp3-HD-Aoede; empty: the language's default
    language: str = setting("", pattern=OPTIONAL_LANGUAGE_TAG)  # default: [general] language
    speaking_rate: float = setting(1.0, minimum=0.25, maximum=4.0)


class GoogleTextToSpeech(Provider[GoogleTextToSpeechSettings]):
    """``text:synthesize`` over REST, MULAW at 8000 Hz (the API wraps it in a WAV header);
    ``StreamingSynthesize`` over gRPC, PCM at 16000 Hz, for the real-time conversation."""

    name = NAME
    Settings = GoogleTextToSpeechSettings

    def setup(self) -> None:
        settings = self.settings
        self._tts = texttospeech = import_sdk(NAME, "google.cloud.texttospeech", package="google-cloud-texttospeech",
                                              extra="google")
        from google.api_core.client_options import ClientOptions
        self._credentials = credentials = service_account_credentials(NAME, settings.credentials_file,
                                                                      _CREDENTIALS_HINT)
        kwargs: dict[str, Any] = {"transport": "rest", "credentials": credentials}
        if settings.endpoint:
            kwargs["client_options"] = ClientOptions(api_endpoint=settings.endpoint)
        self._client = create_client(NAME, texttospeech.TextToSpeechClient, _CREDENTIALS_HINT, **kwargs)
        # Streaming needs a gRPC client, made on the first stream (nothing connects before).
        self._streaming_client: Any = None
        self._streaming_lock = threading.Lock()
        self._cannot_stream = ""    # why the API refused to stream this voice, once it has

    def synthesize(self, text: str) -> SpeechAudio:
        return synthesize_in_parts(NAME, text, MAX_INPUT_CHARS, self._synthesize_one)

    # -- streaming ---------------------------------------------------------------------------
    def synthesize_stream(self, text: str) -> Iterator[SpeechAudio]:
        """Speech for ``text`` as ``StreamingSynthesize`` produces it (see
        :meth:`~voiceassist.providers.base.StreamingTextToSpeech.synthesize_stream`): one call,
        the text in pieces the API accepts, 16 kHz PCM chunks as they arrive. Opening it and its
        first audio are retried like any request and bounded by the turn's time; later chunks
        may each take up to ``timeout``. A voice the API will not stream (INVALID_ARGUMENT before
        any audio; only Chirp 3 HD voices stream) is synthesised whole by :meth:`synthesize`,
        once per sentence, logged the first time. :meth:`close` on the returned iterator, from
        any thread, cancels the call."""
        from ..text.speakable import split_text

        text = text.strip()
        if not text:
            raise ProviderBadResponse(f"{NAME}: nothing to say", provider=NAME)
        return _SpeechStream(self, split_text(text, MAX_INPUT_CHARS))

    def _grpc_client(self) -> Any:
        """The gRPC client for streaming, on the REST client's endpoint (made once, on first use)."""
        with self._streaming_lock:
            if self._streaming_client is None:
                self._streaming_client = self._create_grpc_client()
            return self._streaming_client

    def _create_grpc_client(self) -> Any:
        from google.api_core.client_options import ClientOptions

        endpoint = self.settings.endpoint
        factory = self._tts.TextToSpeechClient
        kwargs: dict[str, Any] = {}
        if endpoint.startswith("http://"):
            # An http:// endpoint means a plaintext local server: api_endpoint alone would use TLS.
            import grpc

            channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
            kwargs["transport"] = factory.get_transport_class("grpc")(channel=channel)
        else:
            kwargs["transport"] = "grpc"
            if self._credentials is not None:
                kwargs["credentials"] = self._credentials
            if endpoint:
                # a gRPC target is host[:port], no scheme
                kwargs["client_options"] = ClientOptions(api_endpoint=endpoint.removeprefix("https://"))
        return create_client(NAME, factory, _CREDENTIALS_HINT, **kwargs)

    def _streaming_requests(self, pieces: list[str]) -> list[Any]:
        """The call's messages: the configuration (voice, PCM at 16 kHz, speaking rate), then
        each piece of text."""
        tts = self._tts
        voice = tts.VoiceSelectionParams(language_code=self.language, name=self.settings.voice or None)
        audio = tts.StreamingAudioConfig(audio_encoding=tts.AudioEncoding.PCM, sample_rate_hertz=STREAM_SAMPLE_RATE,
                                         speaking_rate=self.settings.speaking_rate)
        config = tts.StreamingSynthesizeConfig(voice=voice, streaming_audio_config=audio)
        return [tts.StreamingSynthesizeRequest(streaming_config=config),
                *(tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=piece)) for piece in pieces)]

    def _fall_back(self, pieces: list[str], why: str) -> SpeechAudio:
        """The whole speech from ``text:synthesize``, for a voice that cannot stream."""
        if not self._cannot_stream:
            self._cannot_stream = why
            logger.warning("%s: voice %r cannot stream (%s): each sentence is synthesised whole "
                           "(choose a Chirp 3 HD voice to stream)", NAME, self.settings.voice or self.language, why)
        return self.synthesize(" ".join(pieces))

    def _synthesize_one(self, text: str) -> SpeechAudio:
        tts = self._tts
        voice = tts.VoiceSelectionParams(language_code=self.language, name=self.settings.voice or None)
        audio_config = tts.AudioConfig(audio_encoding=tts.AudioEncoding.MULAW, sample_rate_hertz=8000,
                                       speaking_rate=self.settings.speaking_rate)
        # retry=None: the SDK's default retry policy would outlast the caller's patience.
        response = call_sdk(NAME, lambda seconds: self._client.synthesize_speech(
            input=tts.SynthesisInput(text=text), voice=voice, audio_config=audio_config, retry=None, timeout=seconds),
            timeout=self.settings.timeout, retries=self.settings.retries, hint=_CREDENTIALS_HINT)
        mulaw = _strip_wav_header(bytes(response.audio_content))
        if not mulaw:
            raise ProviderBadResponse(f"{NAME}: empty audio", provider=NAME)
        return SpeechAudio(data=mulaw, encoding="mulaw", sample_rate=8000)


class _CannotStream(Exception):
    """The API refused to stream this voice (INVALID_ARGUMENT before any audio)."""


class _Watchdog:
    """Cancels a gRPC call whose next chunk is late: due within ``seconds`` of the start, then
    of each :meth:`expect`. One thread, ended by :meth:`stop`."""

    def __init__(self, call: Any, seconds: float) -> None:
        self.fired = False
        self._call = call
        self._due = time.monotonic() + seconds
        self._stopped = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{NAME}-watchdog")
        self._thread.start()

    def expect(self, seconds: float) -> None:
        with self._condition:
            self._due = time.monotonic() + seconds

    def _run(self) -> None:
        with self._condition:
            while not self._stopped:
                left = self._due - time.monotonic()
                if left <= 0:
                    self.fired = True
                    break
                self._condition.wait(left)
        if self.fired:
            self._call.cancel()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()


class _SpeechStream(Iterator[SpeechAudio]):
    """One ``StreamingSynthesize`` call's speech, read by one thread; :meth:`close` may come from
    any other (a barge-in): it cancels the call, which ends a read waiting on it."""

    def __init__(self, provider: GoogleTextToSpeech, pieces: list[str]) -> None:
        self._provider = provider
        self._pieces = pieces
        self._lock = threading.Lock()
        self._call: Any = None
        self._closed = False
        self._chunks = self._generate()

    def __iter__(self) -> _SpeechStream:
        return self

    def __next__(self) -> SpeechAudio:
        return next(self._chunks)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            call = self._call
        if call is not None:
            call.cancel()  # a no-op on a call that has already ended
        try:
            self._chunks.close()
        except ValueError:
            pass  # being read on another thread right now: the cancelled call ends it there

    def _attach(self, call: Any) -> bool:
        with self._lock:
            self._call = call
            return not self._closed

    def _open(self, seconds: float) -> tuple[Any, Iterator[Any], _Watchdog, bytes]:
        """A new call and its first audio, within ``seconds``."""
        import grpc
        from google.api_core import exceptions

        provider = self._provider
        # The transport's own callable, not the client method: that one waits for the first
        # response before it returns, and a call that has not returned cannot be cancelled.
        call = provider._grpc_client().transport.streaming_synthesize(iter(provider._streaming_requests(self._pieces)))
        watchdog = _Watchdog(call, seconds)
        try:
            if not self._attach(call):
                call.cancel()
            responses = iter(call)
            for response in responses:
                if response.audio_content:
                    return call, responses, watchdog, bytes(response.audio_content)
            raise ProviderBadResponse(f"{NAME}: the stream ended without audio", provider=NAME)
        except grpc.RpcError as exc:
            watchdog.stop()
            if watchdog.fired:
                raise ProviderTimeout(f"{NAME}: no audio within {seconds:.1f} s", provider=NAME) from None
            error = exceptions.from_grpc_error(exc)  # type: ignore[no-untyped-call]
            if isinstance(error, exceptions.InvalidArgument) and not self._closed:
                raise _CannotStream(str(getattr(error, "message", "") or error)) from None
            raise map_sdk_error(NAME, error, hint=_CREDENTIALS_HINT) from None
        except BaseException:
            watchdog.stop()
            call.cancel()
            raise

    def _generate(self) -> Generator[SpeechAudio, None, None]:
        import grpc
        from google.api_core import exceptions

        provider = self._provider
        settings = provider.settings
        if provider._cannot_stream:
            yield provider._fall_back(self._pieces, provider._cannot_stream)
            return
        try:
            call, responses, watchdog, chunk = with_retries(
                lambda: self._open(deadline.budget(settings.timeout, NAME)), provider=NAME, retries=settings.retries)
        except _CannotStream as exc:
            yield provider._fall_back(self._pieces, str(exc))
            return
        except ProviderError:
            if self._closed:
                return  # cancelled while opening: nobody is waiting for an error
            raise
        try:
            carry = b""
            while True:
                data = carry + chunk
                whole = len(data) // 2 * 2  # a sample may be split between two messages
                carry = data[whole:]
                if whole:
                    yield SpeechAudio(data=data[:whole], encoding="s16le", sample_rate=STREAM_SAMPLE_RATE)
                watchdog.expect(settings.timeout)
                for response in responses:
                    chunk = bytes(response.audio_content)
                    if chunk:
                        break
                else:
                    return
        except grpc.RpcError as exc:
            if self._closed:
                return
            if watchdog.fired:
                raise ProviderTimeout(f"{NAME}: the stream stalled for {settings.timeout:g} s ([google_tts] timeout)",
                                      provider=NAME) from None
            raise map_sdk_error(NAME, exceptions.from_grpc_error(exc),  # type: ignore[no-untyped-call]
                                hint=_CREDENTIALS_HINT) from None
        finally:
            watchdog.stop()
            call.cancel()  # also when the reader stopped early: the server stops too


def _strip_wav_header(content: bytes) -> bytes:
    """The samples of the ``data`` chunk when ``content`` is a RIFF/WAVE file, else ``content``."""
    if content[:4] != b"RIFF" or content[8:12] != b"WAVE":
        return content
    position = 12
    while position + 8 <= len(content):
        chunk_id, size = content[position:position + 4], int.from_bytes(content[position + 4:position + 8], "little")
        if chunk_id == b"data":
            return content[position + 8:position + 8 + size]
        position += 8 + size + (size & 1)
    raise ProviderBadResponse(f"{NAME}: WAV answer without a data chunk", provider=NAME)
