"""Offline text-to-speech with espeak-ng (Debian package): robotic, but tiny and fast."""

from __future__ import annotations

import subprocess

from ..config import Config
from ..errors import ProviderBadResponse, ProviderError, ProviderNotInstalled
from .base import SpeechAudio

NAME = "espeak"


class EspeakTextToSpeech:
    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        self.voice = section.get("voice")
        self.speed = section.get_int("words_per_minute")

    def synthesize(self, text: str) -> SpeechAudio:
        if not text.strip():
            raise ProviderBadResponse(f"{NAME}: nothing to say", provider=NAME)
        try:
            # The text goes on stdin, never on the command line (it may start with "-").
            result = subprocess.run(["espeak-ng", "-v", self.voice, "-s", str(self.speed), "--stdout"],
                                    input=text.encode("utf-8"), capture_output=True, timeout=20, check=False)
        except FileNotFoundError:
            raise ProviderNotInstalled("espeak-ng is not installed: apt-get install espeak-ng", provider=NAME) from None
        if result.returncode != 0 or len(result.stdout) <= 44:
            raise ProviderError(f"{NAME}: espeak-ng failed: {result.stderr.decode(errors='replace')[-200:]}", provider=NAME)
        return SpeechAudio(data=result.stdout, encoding="wav", sample_rate=22050)
