"""Offline text-to-speech with espeak-ng (Debian package): robotic, but tiny and fast."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from ..config import setting
from ..errors import ProviderBadResponse, ProviderError, ProviderNotInstalled
from ..text.languages import primary
from ..types import SpeechAudio
from .base import Provider

NAME = "espeak"


@dataclass(frozen=True)
class EspeakSettings:
    # An espeak-ng voice (espeak-ng --voices); empty: the call's language's (en-US: en-us, de-DE: de).
    voice: str = setting("", pattern=r"[A-Za-z0-9_+-]*")
    words_per_minute: int = setting(160, minimum=80, maximum=450)


# espeak-ng voices named by language and region; for other tags the language alone is the voice.
_REGIONAL_VOICES = frozenset({"en-us", "en-gb", "es-419", "pt-br", "fr-be", "fr-ch", "vi-vn-x-central"})


def voice_for(language: str) -> str:
    """espeak-ng's voice for a language tag: en-US → en-us, es-419 → es-419, de-DE → de."""
    tag = language.replace("_", "-").lower()
    return tag if tag in _REGIONAL_VOICES else primary(tag)


class EspeakTextToSpeech(Provider[EspeakSettings]):
    name = NAME
    Settings = EspeakSettings

    def synthesize(self, text: str) -> SpeechAudio:
        if not text.strip():
            raise ProviderBadResponse(f"{NAME}: nothing to say", provider=NAME)
        try:
            # The text goes on stdin, never on the command line (it may start with "-").
            voice = self.settings.voice or voice_for(self.language)
            result = subprocess.run(["espeak-ng", "-v", voice, "-s", str(self.settings.words_per_minute), "--stdout"],
                                    input=text.encode("utf-8"), capture_output=True, timeout=20, check=False)
        except FileNotFoundError:
            raise ProviderNotInstalled("espeak-ng is not installed: apt-get install espeak-ng", provider=NAME) from None
        if result.returncode != 0 or len(result.stdout) <= 44:
            raise ProviderError(f"{NAME}: espeak-ng failed: {result.stderr.decode(errors='replace')[-200:]}", provider=NAME)
        return SpeechAudio(data=result.stdout, encoding="wav", sample_rate=22050)
