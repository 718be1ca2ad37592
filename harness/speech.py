"""Spoken test questions at phone quality, and how well an offline recogniser hears them."""

from __future__ import annotations

import subprocess
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from voiceassist.audio.recording import read_recording
from voiceassist.config import load_config
from voiceassist.text.knowledge import SAMPLE_KNOWLEDGE, questions

REPO = Path(__file__).resolve().parents[1]
KNOWLEDGE = SAMPLE_KNOWLEDGE
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


def spoken_question(directory: Path, text: str, marker_hz: float, rate: int) -> bytes:
    """16-bit PCM at ``rate``: a 300 ms marker tone, then ``text`` spoken by espeak-ng (the
    recipe of harness/rig/calls.py's make_question, at any rate)."""
    directory.mkdir(parents=True, exist_ok=True)
    raw, marker, speech, question = (directory / f"{name}-{rate}.wav" for name in ("espeak", "marker", "speech", "question"))
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(marker),
                    "synth", "0.3", "sine", str(marker_hz), "vol", "0.4"], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(speech)], check=True)
    subprocess.run(["sox", str(marker), str(speech), str(question)], check=True)
    with wave.open(str(question), "rb") as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (rate, 2, 1)
        return wav.readframes(wav.getnframes())


def tone_spans(pcm: bytes, rate: int, frequency: float, window_s: float = 0.02,
               min_seconds: float = 0.1) -> list[tuple[float, float]]:
    """Where in ``pcm`` (16-bit mono at ``rate``) a tone of ``frequency`` dominates: (start, end)
    seconds of each stretch of at least ``min_seconds`` (a voice passes through the frequency
    for a window or two), to a window (20 ms) of precision."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    window = int(rate * window_s)
    spans: list[tuple[float, float]] = []
    start = None
    for index in range(0, len(samples) - window + 1, window):
        chunk = samples[index:index + window]
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(window))) ** 2
        total = spectrum.sum()
        bin_ = int(round(frequency * window / rate))
        on = total > 1e5 and spectrum[max(0, bin_ - 1): bin_ + 2].sum() / total > 0.5
        at = index / rate
        if on and start is None:
            start = at
        elif not on and start is not None:
            spans.append((start, at))
            start = None
    if start is not None:
        spans.append((start, len(samples) / rate))
    return [(a, b) for a, b in spans if b - a >= min_seconds]


def speech_end_seconds(pcm: bytes, rate: int) -> float:
    """Where the speech ends: the end of the last 20 ms frame that is not near-silence."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frame = rate // 50
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    loud = np.flatnonzero(np.abs(frames).mean(axis=1) > 256)
    return float((loud[-1] + 1) * frame / rate)
