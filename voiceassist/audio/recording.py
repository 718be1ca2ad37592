"""The caller's recording: reading the WAV Asterisk (or our listener) wrote, and finding speech in it."""

from __future__ import annotations

import array
import os
import sys
import wave

from ..errors import AudioError
from ..types import Recording

# Asterisk's default dsp.conf silence threshold: a 20 ms frame is speech when its mean |sample| is above it.
SILENCE_THRESHOLD = 256


def read_recording(path: str | os.PathLike[str], max_seconds: float) -> Recording:
    """Read a MixMonitor/Record WAV (8 kHz, 16-bit, mono), keeping at most ``max_seconds``."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise AudioError(f"recording {path} is not 16-bit mono WAV")
            rate = wav.getframerate()
            frames = wav.readframes(min(wav.getnframes(), int(max_seconds * rate)))
    except FileNotFoundError:
        raise AudioError(f"recording {path} does not exist") from None
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"recording {path} is not a readable WAV file: {exc}") from None
    return Recording(pcm=frames, sample_rate=rate)


def speech_frames(recording: Recording, threshold: int = SILENCE_THRESHOLD) -> int:
    """Count 20 ms frames louder than ``threshold`` (Asterisk's own notion of non-silence)."""
    samples = array.array("h")
    samples.frombytes(recording.pcm[: len(recording.pcm) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    step = max(1, recording.sample_rate // 50)
    loud = 0
    for start in range(0, len(samples), step):
        frame = samples[start:start + step]
        if frame and sum(map(abs, frame)) / len(frame) > threshold:
            loud += 1
    return loud
