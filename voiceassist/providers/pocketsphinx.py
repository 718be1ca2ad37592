"""Offline speech-to-text with PocketSphinx (its PyPI wheel bundles the en-us model).

Open vocabulary is weak on 8 kHz phone audio. With the knowledge file's questions as a JSGF
grammar it is much better; the grammar decoder sometimes stops a word or two short of the end of
a sentence, so its hypothesis is matched to the closest known question, and when nothing plausible
matched the open-vocabulary result is used instead.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from ..audio.conversion import resample
from ..audio.recording import speech_frames
from ..config import setting
from ..errors import ConfigError
from ..text.knowledge import questions
from ..types import Recording, Transcript
from .base import Provider, import_sdk

NAME = "pocketsphinx"
_DECODER_LOCK = threading.Lock()  # a Decoder is not thread-safe; FastAGI shares one per process


def jsgf(phrases: list[str]) -> str:
    return "#JSGF V1.0;\ngrammar questions;\npublic <question> = " + " | ".join(phrases) + " ;\n"


def closest(hypothesis: str, phrases: list[str]) -> str | None:
    """The phrase the grammar hypothesis most plausibly was (the search may stop words short)."""
    words = hypothesis.split()
    if not words:
        return None
    starting = [p for p in phrases if p.split()[: len(words)] == words]
    if len(starting) == 1:  # a prefix of exactly one known question
        return starting[0]
    if hypothesis in phrases:
        return hypothesis
    scored = [(SequenceMatcher(None, words, p.split()).ratio(), p) for p in phrases]
    score, best = max(scored)
    return best if score >= 0.75 else None


@dataclass(frozen=True)
class PocketSphinxSettings:
    # auto: a grammar of the knowledge file's questions when there are any, else open vocabulary;
    # none: open vocabulary; or the path of a JSGF grammar file.
    grammar: str = setting("auto", pattern=r"auto|none|/.*")


class PocketSphinxSpeechToText(Provider[PocketSphinxSettings]):
    name = NAME
    Settings = PocketSphinxSettings

    def setup(self) -> None:
        Decoder = import_sdk(NAME, "pocketsphinx", package="pocketsphinx", extra="local").Decoder
        self.ffmpeg = self.context.ffmpeg
        grammar = self.settings.grammar
        self.phrases: list[str] = []
        grammar_path = None
        if grammar == "auto":
            self.phrases = questions(self.context.knowledge())
        elif grammar not in ("", "none"):
            grammar_path = grammar
            if not Path(grammar).exists():
                raise ConfigError(f"[{NAME}] grammar = {grammar} does not exist")
        self._open = Decoder(samprate=16000, loglevel="FATAL")
        self._grammar: Any = None
        if self.phrases:
            # The decoder reads the grammar once, when it is built: the file is not needed after
            # that (one was left in /tmp per call before).
            with tempfile.NamedTemporaryFile("w", prefix="voiceassist-", suffix=".gram") as handle:
                handle.write(jsgf(self.phrases))
                handle.flush()
                self._grammar = Decoder(samprate=16000, jsgf=handle.name, loglevel="FATAL")
        elif grammar_path:
            self._grammar = Decoder(samprate=16000, jsgf=grammar_path, loglevel="FATAL")

    @staticmethod
    def _decode(decoder: Any, pcm: bytes) -> str:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr.strip() if hypothesis else ""

    def transcribe(self, recording: Recording) -> Transcript:
        if speech_frames(recording) == 0:  # open vocabulary "hears" words in digital silence
            return Transcript("")
        # Half a second of silence on both sides lets the grammar search reach its final state.
        pad = b"\0\0" * 8000
        # The bundled acoustic model wants 16 kHz.
        pcm = pad + resample(recording.pcm, recording.sample_rate, 16000, ffmpeg=self.ffmpeg) + pad
        with _DECODER_LOCK:
            if self._grammar is not None:
                heard = self._decode(self._grammar, pcm)
                if not self.phrases:
                    return Transcript(heard)
                match = closest(heard, self.phrases)
                if match:
                    return Transcript(match)
            return Transcript(self._decode(self._open, pcm))
