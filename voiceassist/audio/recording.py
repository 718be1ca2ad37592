"""The caller's recording: reading the WAV Asterisk (or our listener) wrote, and finding speech in it."""

from __future__ import annotations

import array
import io
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


def write_wav(directory: str | os.PathLike[str], name: str, pcm: bytes, rate: int) -> str:
    """Write 16-bit mono ``pcm`` as ``directory/name`` (a WAV file a browser or sox can play);
    the directory is made if missing. Neither it nor the file may be a symbolic link."""
    if "/" in name or name.startswith("."):
        raise ValueError(f"not a file name: {name!r}")
    os.makedirs(directory, mode=0o750, exist_ok=True)
    if os.path.islink(directory):
        raise ValueError(f"{directory} is a symbolic link")
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    with os.fdopen(fd, "wb") as file:
        file.write(wav_bytes(pcm, rate))
    return path


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """16-bit mono ``pcm`` (native byte order) as a WAV file's bytes."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm if sys.byteorder == "little" else _swapped(pcm))
    return out.getvalue()


def _swapped(pcm: bytes) -> bytes:
    samples = array.array("h", pcm)
    samples.byteswap()
    return samples.tobytes()
