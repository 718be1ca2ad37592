"""Text-to-speech with Google Cloud Text-to-Speech (``google-cloud-texttospeech``).

Asks for 8 kHz MULAW, which is what Asterisk plays: no resampling, no ffmpeg run. Uses the same
service-account credentials as Google Speech (``[google_tts] credentials_file`` falls back to
``[google_speech] credentials_file``, then ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import OPTIONAL_LANGUAGE_TAG, setting
from ..errors import ProviderBadResponse
from ..types import SpeechAudio
from .base import Provider, RequestSettings, call_sdk, import_sdk, synthesize_in_parts
from .google_credentials import create_client, service_account_credentials

NAME = "google_tts"
_CREDENTIALS_HINT = "set [google_tts] or [google_speech] credentials_file, or GOOGLE_APPLICATION_CREDENTIALS"
# The API limits input to 5000 bytes; characters here, with room for multi-byte text.
MAX_INPUT_CHARS = 1500


@dataclass(frozen=True)
class GoogleTextToSpeechSettings(RequestSettings):
    endpoint: str = ""            # default: texttospeech.googleapis.com
    credentials_file: str = ""    # else [google_speech] credentials_file, else GOOGLE_APPLICATION_CREDENTIALS
    voice: str = ""               # e.g. en-US-Chirp3-HD-Aoede; empty: the language's default
    language: str = setting("", pattern=OPTIONAL_LANGUAGE_TAG)  # default: [general] language
    speaking_rate: float = setting(1.0, minimum=0.25, maximum=4.0)


class GoogleTextToSpeech(Provider[GoogleTextToSpeechSettings]):
    """``text:synthesize`` over REST, MULAW at 8000 Hz (the API wraps it in a WAV header)."""

    name = NAME
    Settings = GoogleTextToSpeechSettings

    def setup(self) -> None:
        settings = self.settings
        self._tts = texttospeech = import_sdk(NAME, "google.cloud.texttospeech", package="google-cloud-texttospeech",
                                              extra="google")
        from google.api_core.client_options import ClientOptions
        credentials = service_account_credentials(NAME, settings.credentials_file, _CREDENTIALS_HINT)
        kwargs: dict[str, Any] = {"transport": "rest", "credentials": credentials}
        if settings.endpoint:
            kwargs["client_options"] = ClientOptions(api_endpoint=settings.endpoint)
        self._client = create_client(NAME, texttospeech.TextToSpeechClient, _CREDENTIALS_HINT, **kwargs)

    def synthesize(self, text: str) -> SpeechAudio:
        return synthesize_in_parts(NAME, text, MAX_INPUT_CHARS, self._synthesize_one)

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
