"""Speech-to-text with Google Cloud Speech (``google-cloud-speech``), telephony model at 8 kHz.

``[google_speech] api_version = v1`` (default: no project or recognizer needed) or ``v2``
(recognizers; ``project``, ``location`` and ``recognizer``, ``_`` being the implicit one).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config import Config
from ..deadline import budget
from ..errors import ConfigError, ProviderNotInstalled
from ._errors import map_sdk_error, with_retries
from .base import Recording, Transcript
from .google_credentials import create_client, service_account_credentials

NAME = "google_speech"
_CREDENTIALS_HINT = "set [google_speech] credentials_file or GOOGLE_APPLICATION_CREDENTIALS"


class GoogleSpeechToText:
    """Google Cloud Speech-to-Text ``recognize`` over REST (default) or gRPC (v1 only)."""

    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.model = section.get("model")
        self.language = section.get("language") or config.section("general").get("language")
        self.timeout = section.get_float("timeout")
        self.retries = section.get_int("retries")
        self.version = section.get("api_version").strip().lower()
        if self.version not in ("v1", "v2"):
            raise ConfigError(f"[google_speech] api_version must be v1 or v2, got {self.version!r}")
        endpoint = section.get("endpoint")
        transport = section.get("transport").lower()
        try:
            from google.api_core.client_options import ClientOptions

            # Only the version in use: each costs a few hundred milliseconds to import.
            self._speech = importlib.import_module(f"google.cloud.speech_{self.version}")
        except ImportError:
            raise ProviderNotInstalled(
                "google-cloud-speech is not installed: pip install 'voiceassist[google]'", provider=NAME
            ) from None
        if self.version == "v2":
            project, location = section.get("project"), section.get("location")
            if not project:
                raise ConfigError("[google_speech] project is required with api_version = v2")
            self.recognizer = f"projects/{project}/locations/{location}/recognizers/{section.get('recognizer')}"
            if not endpoint and location != "global":
                endpoint = f"{location}-speech.googleapis.com"  # regional recognizers live on regional hosts
        credentials = service_account_credentials(NAME, section.get("credentials_file"), _CREDENTIALS_HINT)
        kwargs: dict[str, Any] = {}
        if transport == "grpc" and endpoint.startswith("http://"):
            # An http:// endpoint means a plaintext local server: api_endpoint alone would use TLS.
            import grpc

            channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
            kwargs["transport"] = self._speech.SpeechClient.get_transport_class("grpc")(channel=channel)
        else:
            kwargs["transport"] = transport
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
                language_codes=[self.language], model=self.model,
                features=types.RecognitionFeatures(enable_automatic_punctuation=True))
            return {"request": types.RecognizeRequest(recognizer=self.recognizer, config=config,
                                                      content=recording.pcm)}
        config = speech.RecognitionConfig(
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=recording.sample_rate,
            audio_channel_count=1,
            language_code=self.language,
            model=self.model,
            enable_automatic_punctuation=True,
        )
        return {"config": config, "audio": speech.RecognitionAudio(content=recording.pcm)}

    def transcribe(self, recording: Recording) -> Transcript:
        request = self._request(recording)

        def call() -> Any:
            try:
                # retry=None: v1's default retries 503s for up to 5000 s; v2's default timeout is infinite.
                return self._client.recognize(**request, timeout=budget(self.timeout, NAME), retry=None)
            except Exception as exc:
                raise map_sdk_error(NAME, exc, hint=_CREDENTIALS_HINT) from None

        response = with_retries(call, provider=NAME, retries=self.retries)
        parts = [r.alternatives[0].transcript.strip() for r in response.results if r.alternatives]
        text = " ".join(p for p in parts if p)
        confidence = None
        if response.results and response.results[0].alternatives:
            confidence = float(response.results[0].alternatives[0].confidence) or None
        return Transcript(text=text, confidence=confidence)
