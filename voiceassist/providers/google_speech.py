"""Speech-to-text with Google Cloud Speech v1 (``google-cloud-speech``), telephony model at 8 kHz."""

from __future__ import annotations

import os
from typing import Any

from ..config import Config
from ..errors import ProviderAuthError, ProviderError, ProviderNotInstalled
from ._errors import from_http_status, from_transport, with_retries
from .base import Recording, Transcript

NAME = "google_speech"
_CREDENTIALS_HINT = "set [google_speech] credentials_file or GOOGLE_APPLICATION_CREDENTIALS"


class GoogleSpeechToText:
    """Google Cloud Speech-to-Text v1 ``recognize`` over REST (default) or gRPC."""

    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.model = section.get("model")
        self.language = section.get("language") or config.section("general").get("language")
        self.timeout = section.get_float("timeout")
        self.retries = section.get_int("retries")
        endpoint = section.get("endpoint")
        transport = section.get("transport").lower()
        credentials_file = section.get("credentials_file")
        try:
            from google.api_core.client_options import ClientOptions
            from google.cloud import speech_v1
        except ImportError:
            raise ProviderNotInstalled(
                "google-cloud-speech is not installed: pip install 'voiceassist[google]'", provider=NAME
            ) from None
        self._speech = speech_v1
        credentials = _credentials(credentials_file)
        kwargs: dict[str, Any] = {}
        if transport == "grpc" and endpoint.startswith("http://"):
            # An http:// endpoint means a plaintext local server: api_endpoint alone would use TLS.
            import grpc
            from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

            channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
            kwargs["transport"] = SpeechGrpcTransport(channel=channel)
        else:
            kwargs["transport"] = transport
            if credentials is not None:
                kwargs["credentials"] = credentials
            if endpoint:
                kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
        try:
            self._client = speech_v1.SpeechClient(**kwargs)
        except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
            if "Credentials" in type(exc).__name__ or "credentials" in str(exc).lower():
                raise ProviderAuthError(f"{NAME}: no usable credentials ({_CREDENTIALS_HINT})", provider=NAME) from None
            raise ProviderError(f"{NAME}: cannot create client: {exc}", provider=NAME) from None

    def transcribe(self, recording: Recording) -> Transcript:
        speech = self._speech
        config = speech.RecognitionConfig(
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=recording.sample_rate,
            audio_channel_count=1,
            language_code=self.language,
            model=self.model,
            enable_automatic_punctuation=True,
        )
        audio = speech.RecognitionAudio(content=recording.pcm)

        def call() -> Any:
            try:
                # retry=None: the SDK's default retries 503s for up to 5000 s.
                return self._client.recognize(config=config, audio=audio, timeout=self.timeout, retry=None)
            except Exception as exc:
                raise _map_error(exc) from None

        response = with_retries(call, provider=NAME, retries=self.retries)
        parts = [r.alternatives[0].transcript.strip() for r in response.results if r.alternatives]
        text = " ".join(p for p in parts if p)
        confidence = None
        if response.results and response.results[0].alternatives:
            confidence = float(response.results[0].alternatives[0].confidence) or None
        return Transcript(text=text, confidence=confidence)


def _credentials(credentials_file: str) -> Any:
    if credentials_file.lower() == "anonymous":
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    path = credentials_file or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if not path:
        raise ProviderAuthError(f"{NAME}: no credentials configured ({_CREDENTIALS_HINT})", provider=NAME)
    try:
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_file(
            path, scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except FileNotFoundError:
        raise ProviderAuthError(f"{NAME}: credentials file {path} does not exist ({_CREDENTIALS_HINT})", provider=NAME) from None
    except PermissionError:
        raise ProviderAuthError(f"{NAME}: credentials file {path} is not readable by uid {os.getuid()}", provider=NAME) from None
    except (ValueError, KeyError) as exc:
        raise ProviderAuthError(f"{NAME}: credentials file {path} is not a service-account key: {exc}", provider=NAME) from None


def _map_error(exc: Exception) -> ProviderError:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and hasattr(exc, "message"):  # google.api_core.exceptions.GoogleAPICallError
        return from_http_status(NAME, code, str(getattr(exc, "message", exc)), hint=_CREDENTIALS_HINT)
    mapped = from_transport(NAME, exc)
    return mapped or ProviderError(f"{NAME}: {type(exc).__name__}: {exc}", provider=NAME)
