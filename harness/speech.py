"""Spoken test questions at phone quality, and how well an offline recogniser hears them."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from voiceassist.audio.recording import read_recording
from voiceassist.config import load_config
from voiceassist.text.knowledge import questions

REPO = Path(__file__).resolve().parents[1]
KNOWLEDGE = REPO / "tests/data/acme-knowledge.md"
VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-gb", "en-us+m7")


def word_errors(reference: str, hypothesis: str) -> int:
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def spoken(text: str, voice: str, directory: Path, speed: int = 150) -> Path:
    raw, ulaw, wav = directory / "raw.wav", directory / "line.ulaw", directory / f"{voice}-{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ar", "8000", "-ac", "1", "-f", "mulaw",
                    str(ulaw)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "mulaw", "-ar", "8000", "-ac", "1", "-i", str(ulaw),
                    "-acodec", "pcm_s16le", str(wav)], check=True)
    return wav


def measure(voices: tuple[str, ...] = VOICES) -> dict[str, dict[str, float]]:
    """Word accuracy and mean decode time, with the knowledge grammar and with open vocabulary."""
    from voiceassist import providers

    phrases = questions(KNOWLEDGE.read_text())
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        conf = directory / "va.conf"
        samples = [(phrase, read_recording(spoken(phrase, voice, directory), 55))
                   for phrase in phrases for voice in voices]
        for mode, knowledge in (("grammar", KNOWLEDGE), ("open vocabulary", "")):
            conf.write_text(f"[general]\nknowledge_file = {knowledge}\n")
            stt = providers.create_named("stt", "pocketsphinx", load_config(conf, environ={}))
            errors = words = 0
            exact = 0
            started = time.perf_counter()
            for phrase, recording in samples:
                text = stt.transcribe(recording).text
                errors += word_errors(phrase, text)
                words += len(phrase.split())
                exact += text == phrase
            elapsed = time.perf_counter() - started
            results[mode] = {"word_accuracy": max(0.0, 1 - errors / words), "exact": exact / len(samples),
                             "seconds_per_question": elapsed / len(samples), "questions": len(samples)}
    return results
