"""Speech-to-text with Google Cloud Speech (``google-cloud-speech``), telephony model at 8 kHz.

``[google_speech] api_version = v1`` (default: no project or recognizer needed) or ``v2``
(recognizers; ``project``, ``location`` and ``recognizer``, ``_`` being the implicit one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import OPTIONAL_LANGUAGE_TAG, SECONDS, setting
from ..errors import ConfigError
from ..types import Recording, Transcript
from .base import Provider, RequestSettings, call_sdk, import_sdk
from .google_credentials import create_client, service_account_credentials

NAME = "google_speech"
_CREDENTIALS_HINT = "set [google_speech] credentials_file or GOOGLE_APPLICATION_CREDENTIALS"


@dataclass(frozen=True)
class GoogleSpeechSettings(RequestSettings):
    timeout: float = setting(5.0, **SECONDS)
    endpoint: str = ""            # default: speech.googleapis.com
    transport: str = setting("rest", choices=("rest", "grpc"))
    credentials_file: str = ""    # else GOOGLE_APPLICATION_CREDENTIALS; "anonymous" for local emulators
    model: str = "telephony"
    language: str = setting("", pattern=OPTIONAL_LANGUAGE_TAG)  # default: [general] language
    api_version: str = setting("v1", choices=("v1", "v2"))  # v2: recognizers; needs project
    project: str = ""             # v2 only
    location: str = "global"      # v2 only; a region uses its regional endpoint
    recognizer: str = "_"         # v2 only; "_" is the implicit recognizer


class GoogleSpeechToText(Provider[GoogleSpeechSettings]):
    """Google Cloud Speech-to-Text ``recognize`` over REST (default) or gRPC."""

    name = NAME
    Settings = GoogleSpeechSettings

    def setup(self) -> None:
        settings = self.settings
        self.version = settings.api_version
        endpoint = settings.endpoint
        # Only the version in use: each costs a few hundred milliseconds to import.
        self._speech = import_sdk(NAME, f"google.cloud.speech_{self.version}", package="google-cloud-speech",
                                  extra="google")
        from google.api_core.client_options import ClientOptions
        if self.version == "v2":
            if not settings.project:
                raise ConfigError("[google_speech] project is required with api_version = v2")
            self.recognizer = (f"projects/{settings.project}/locations/{settings.location}"
                               f"/recognizers/{settings.recognizer}")
            if not endpoint and settings.location != "global":
                endpoint = f"{settings.location}-speech.googleapis.com"  # regional recognizers live on regional hosts
        credentials = service_account_credentials(NAME, settings.credentials_file, _CREDENTIALS_HINT)
        kwargs: dict[str, Any] = {}
        if settings.transport == "grpc" and endpoint.startswith("http://"):
            # An http:// endpoint means a plaintext local server: api_endpoint alone would use TLS.
            import grpc

            channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
            kwargs["transport"] = self._speech.SpeechClient.get_transport_class("grpc")(channel=channel)
        else:
            kwargs["transport"] = settings.transport
            if credentials is not None:
                kwargs["credentials"] = credentials
            if endpoint:
                kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
        self._client = create_client(NAME, self._speech.SpeechClient, _CREDENTIALS_HINT, **kwargs)

    def _request(self, recording: Recording) -> dict[str, Any]:
        speech = self._speech
        if self.version == "v2":
            types = speech.types
            config = types.RecognitionConfig(
                explicit_decoding_config=types.ExplicitDecodingConfig(
                    encoding=types.ExplicitDecodingConfig.AudioEncoding.LINEAR16,
                    sample_rate_hertz=recording.sample_rate, audio_channel_count=1),
                language_codes=[self.language], model=self.settings.model,
                features=types.RecognitionFeatures(enable_automatic_punctuation=True))
            return {"request": types.RecognizeRequest(recognizer=self.recognizer, config=config,
                                                      content=recording.pcm)}
        config = speech.RecognitionConfig(
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=recording.sample_rate,
            audio_channel_count=1,
            language_code=self.language,
            model=self.settings.model,
            enable_automatic_punctuation=True,
        )
        return {"config": config, "audio": speech.RecognitionAudio(content=recording.pcm)}

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
        return Transcript(text=text, confidence=confidence)
