"""Text-to-speech with Google Cloud Text-to-Speech (``google-cloud-texttospeech``).

Asks for 8 kHz MULAW, which is what Asterisk plays: no resampling, no ffmpeg run. Uses the same
service-account credentials as Google Speech (``[google_tts] credentials_file`` falls back to
``[google_speech] credentials_file``, then ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..deadline import budget
from ..errors import ProviderBadResponse, ProviderNotInstalled
from ._errors import map_sdk_error, with_retries
from .base import SpeechAudio, synthesize_in_parts
from .google_credentials import create_client, service_account_credentials

NAME = "google_tts"
_CREDENTIALS_HINT = "set [google_tts] or [google_speech] credentials_file, or GOOGLE_APPLICATION_CREDENTIALS"
# The API limits input to 5000 bytes; characters here, with room for multi-byte text.
MAX_INPUT_CHARS = 1500


class GoogleTextToSpeech:
    """``text:synthesize`` over REST, MULAW at 8000 Hz (the API wraps it in a WAV header)."""

    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.voice_name = section.get("voice")
        self.language = section.get("language") or config.section("general").get("language")
        self.speaking_rate = section.get_float("speaking_rate")
        self.timeout = section.get_float("timeout")
        self.retries = section.get_int("retries")
        credentials_file = section.get("credentials_file") or config.section("google_speech").get("credentials_file", "")
        try:
            from google.api_core.client_options import ClientOptions
            from google.cloud import texttospeech
        except ImportError:
            raise ProviderNotInstalled(
                "google-cloud-texttospeech is not installed: pip install 'voiceassist[google]'", provider=NAME
            ) from None
        self._tts = texttospeech
        credentials = service_account_credentials(NAME, credentials_file, _CREDENTIALS_HINT)
        kwargs: dict[str, Any] = {"transport": "rest", "credentials": credentials}
        if section.get("endpoint"):
            kwargs["client_options"] = ClientOptions(api_endpoint=section.get("endpoint"))
        self._client = create_client(NAME, texttospeech.TextToSpeechClient, _CREDENTIALS_HINT, **kwargs)

    def synthesize(self, text: str) -> SpeechAudio:
        return synthesize_in_parts(NAME, text, MAX_INPUT_CHARS, self._synthesize_one)

    def _synthesize_one(self, text: str) -> SpeechAudio:
        tts = self._tts
        voice = tts.VoiceSelectionParams(language_code=self.language, name=self.voice_name or None)
        audio_config = tts.AudioConfig(audio_encoding=tts.AudioEncoding.MULAW, sample_rate_hertz=8000,
                                       speaking_rate=self.speaking_rate)

        def call() -> Any:
            try:
                # retry=None: the SDK's default retry policy would outlast the caller's patience.
                return self._client.synthesize_speech(input=tts.SynthesisInput(text=text), voice=voice,
                                                      audio_config=audio_config, retry=None,
                                                      timeout=budget(self.timeout, NAME))
            except Exception as exc:
                raise map_sdk_error(NAME, exc, hint=_CREDENTIALS_HINT) from None

        content = bytes(with_retries(call, provider=NAME, retries=self.retries).audio_content)
        mulaw = _strip_wav_header(content)
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
