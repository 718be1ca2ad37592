"""Offline open-vocabulary speech-to-text with Moonshine (tiny-en, MIT; the model is in the wheel).

``moonshine-voice`` 0.1.0 ships the tiny English model inside its wheel and runs it on its own
onnxruntime: nothing is downloaded when a call comes in (its later releases fetch models at run
time, hence the exact pin in setup.cfg). It hears what callers say in their own words, which a
grammar of the knowledge file's questions cannot. One model per process, shared by FastAGI's
threads behind a lock: a question decodes in about a tenth of a second. In the real-time
conversation it streams: the words of the line being spoken as they come, each line final once the
model hears its pause.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from ..audio.recording import speech_frames
from ..config import setting
from ..errors import AudioError, ConfigError, ProviderBadResponse
from ..types import Recording, Transcript, TranscriptEvent
from .base import Provider, import_sdk

NAME = "moonshine"
MODEL_RATE = 16000  # the model hears 16 kHz; the phone line's 8 kHz is upsampled (soxr) first
# Silence added before and after the question: the model drops a first word that starts right at
# the edge ("do you work on sundays" heard as "D work on Sundays"). On the benchmark's 250
# espeak-ng clips word accuracy was 68.1 % with none, 72.5 % with 0.1 s, 70.3 % with 0.5 s.
EDGE_SECONDS = 0.1
# A live call's words are updated this often (interim results; lines the model completes at a
# pause are final at once): each update decodes the line being spoken again.
STREAM_UPDATE_SECONDS = 0.5
_MODELS: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()
_MODEL_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")


@dataclass(frozen=True)
class MoonshineSettings:
    # "" : the tiny English model bundled in moonshine-voice; or a directory holding a Moonshine
    # model's encoder_model.ort, decoder_model_merged.ort and tokenizer.bin.
    model_path: str = setting("", pattern=r"(/.*)?")
    # The architecture of model_path's model.
    arch: str = setting("tiny", choices=("tiny", "base"))


def _load(model_path: str, arch: str) -> tuple[Any, threading.Lock]:
    voice = import_sdk(NAME, "moonshine_voice", package="moonshine-voice", extra="local")
    transcriber = import_sdk(NAME, "moonshine_voice.transcriber", package="moonshine-voice", extra="local")
    if not model_path:
        model_path, arch = str(voice.get_model_path("tiny-en")), "tiny"
    missing = [name for name in _MODEL_FILES if not (Path(model_path) / name).is_file()]
    if missing:
        raise ConfigError(f"[{NAME}] model_path = {model_path} lacks {', '.join(missing)}")
    model = transcriber.Transcriber(model_path=model_path, model_arch=voice.ModelArch[arch.upper()])
    return model, threading.Lock()


class MoonshineSpeechToText(Provider[MoonshineSettings]):
    name = NAME
    Settings = MoonshineSettings

    def setup(self) -> None:
        key = (self.settings.model_path, self.settings.arch)
        with _MODELS_LOCK:  # loaded once per process, whichever thread asks first
            if key not in _MODELS:
                _MODELS[key] = _load(*key)
        self._model, self._lock = _MODELS[key]

    def transcribe(self, recording: Recording) -> Transcript:
        if speech_frames(recording) == 0:  # the model "hears" words in silence and line hiss
            return Transcript("")
        audio = np.frombuffer(recording.pcm[: len(recording.pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if recording.sample_rate != MODEL_RATE:
            audio = soxr.resample(audio, recording.sample_rate, MODEL_RATE)
        edge = np.zeros(int(EDGE_SECONDS * MODEL_RATE), dtype=np.float32)
        audio = np.concatenate([edge, audio.astype(np.float32), edge])
        try:
            with self._lock:  # one decoder, not safe to share between threads at once
                result = self._model.transcribe_without_streaming(audio.tolist(), sample_rate=MODEL_RATE)
        except Exception as exc:  # the library raises its own error types for a failed decode
            raise ProviderBadResponse(f"{NAME}: the model could not decode the recording ({exc})",
                                      provider=NAME) from None
        text = " ".join(line.text.strip() for line in result.lines if line.text.strip())
        return Transcript(re.sub(r"\s+", " ", text).strip())

    # -- streaming -----------------------------------------------------------------------------
    def stream(self, audio: Iterable[bytes], sample_rate: int) -> Iterator[TranscriptEvent]:
        """Words while the caller speaks (see
        :meth:`~voiceassist.providers.base.StreamingSpeechToText.stream`), from Moonshine's own
        stream: its guess at the line being spoken every :data:`STREAM_UPDATE_SECONDS` of audio
        (interim), and each line it completes at a pause (final). What follows the last completed
        line is decoded whole once the audio ends: the stream's own last words, decoded without
        the audio after them, gave 77.5 % word accuracy against 82.0 % (benchmarks.moonshine_streaming).
        A stream whose audio never rose above the line's silence level gives no words."""
        if not 8000 <= sample_rate <= 48000:
            raise AudioError(f"{NAME}: cannot stream audio at {sample_rate} Hz (8000 to 48000 Hz)")
        with self._lock:
            stream = self._model.create_stream(update_interval=1e9)  # updated here, not by add_audio
            stream.start()
        resampler = soxr.ResampleStream(sample_rate, MODEL_RATE, 1, dtype="float32") \
            if sample_rate != MODEL_RATE else None
        heard = bytearray()
        completed: set[int] = set()
        settled = 0.0  # seconds of the stream (after its leading edge) its completed lines cover
        guess, unsent = "", 0.0
        try:
            self._add(stream, [0.0] * int(EDGE_SECONDS * MODEL_RATE))
            for piece in audio:
                heard += piece
                samples = np.frombuffer(piece[: len(piece) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
                if resampler is not None:
                    samples = resampler.resample_chunk(samples)
                self._add(stream, samples.tolist())
                unsent += len(piece) / 2 / sample_rate
                if unsent < STREAM_UPDATE_SECONDS:
                    continue
                unsent = 0.0
                with self._lock:
                    lines = stream.update_transcription().lines
                offset_ms = int(len(heard) / 2 / sample_rate * 1000)
                for line in lines:
                    text = re.sub(r"\s+", " ", line.text).strip()
                    if line.line_id in completed or not text:
                        continue
                    if line.is_complete:
                        completed.add(line.line_id)
                        settled = max(settled, line.start_time + line.duration - EDGE_SECONDS)
                        guess = ""
                        yield TranscriptEvent(text, is_final=True, offset_ms=offset_ms)
                    elif text != guess:
                        guess = text
                        yield TranscriptEvent(text, offset_ms=offset_ms)
        except Exception as exc:
            if isinstance(exc, AudioError) or not type(exc).__module__.startswith("moonshine_voice"):
                raise  # the audio's own error ends the stream and is raised again
            raise ProviderBadResponse(f"{NAME}: the model could not decode the stream ({exc})", provider=NAME) from None
        finally:
            with self._lock:
                stream.close()
        rest = bytes(heard[int(max(0.0, settled) * sample_rate) * 2:])
        words = self.transcribe(Recording(rest, sample_rate)).text  # "" for a silent rest
        if words:
            yield TranscriptEvent(words, is_final=True, offset_ms=int(len(heard) / 2 / sample_rate * 1000))

    def _add(self, stream: Any, samples: list[float]) -> None:
        if samples:
            with self._lock:
                stream.add_audio(samples, MODEL_RATE)
