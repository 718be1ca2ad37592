"""Offline speech-to-text with PocketSphinx (its PyPI wheel bundles the en-us model).

Open vocabulary is weak on 8 kHz phone audio. With the knowledge file's questions as a JSGF
grammar it is much better; the grammar decoder sometimes stops a word or two short of the end of
a sentence, so its hypothesis is matched to the closest known question, and when nothing plausible
matched the open-vocabulary result is used instead.
"""

from __future__ import annotations

import tempfile
import threading
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from ..audio import resample, speech_frames
from ..config import Config
from ..errors import ConfigError, ProviderNotInstalled
from ..knowledge import knowledge_text, questions
from .base import Recording, Transcript

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


class PocketSphinxSpeechToText:
    name = NAME

    def __init__(self, config: Config) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise ProviderNotInstalled("pocketsphinx is not installed: pip install 'voiceassist[local]'",
                                       provider=NAME) from None
        self.ffmpeg = config.section("audio").get("ffmpeg")
        grammar = config.section(NAME).get("grammar").strip()
        self.phrases: list[str] = []
        grammar_path = None
        if grammar == "auto":
            self.phrases = questions(knowledge_text(config))
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
