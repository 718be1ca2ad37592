"""Answer audio for the phone: in-process (soxr + audioop) against ffmpeg, on the same speech."""

from __future__ import annotations

import io
import subprocess
import time
import wave

import numpy as np
import pytest

from voiceassist.audio.conversion import pcm_to_phone_audio, write_phone_audio
from voiceassist.providers.base import SpeechAudio


def ulaw_to_linear(data: bytes) -> np.ndarray:
    """G.711 μ-law decode (the textbook formula, independent of the encoder under test)."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa.astype(np.int32) << 3) + 0x84) << exponent) - 0x84
    return np.where(sign, -magnitude, magnitude).astype(np.float64)


@pytest.fixture(scope="module")
def speech_24k(tmp_path_factory) -> bytes:
    """espeak-ng speech as OpenAI's TTS sends it: 24 kHz 16-bit mono PCM."""
    raw = tmp_path_factory.mktemp("tts") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), "Our office is open from nine to five."], check=True)
    pcm = subprocess.run(["sox", str(raw), "-r", "24000", "-b", "16", "-e", "signed", "-t", "raw", "-"],
                         capture_output=True, check=True).stdout
    return pcm


def test_in_process_conversion_matches_ffmpeg_and_is_faster(tmp_path, speech_24k):
    speech = SpeechAudio(speech_24k, "s16le", 24000)
    t0 = time.perf_counter()
    ours = write_phone_audio(speech, tmp_path / "ours.ulaw").read_bytes()
    in_process_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = write_phone_audio(speech, tmp_path / "ffmpeg.ulaw", in_process=False).read_bytes()
    ffmpeg_s = time.perf_counter() - t0
    assert abs(len(ours) - len(theirs)) <= 16 and abs(len(ours) - len(speech_24k) // 6) <= 16
    a, b = ulaw_to_linear(ours), ulaw_to_linear(theirs)
    n = min(len(a), len(b))
    # Same waveform: resamplers differ in filter and delay by a sample or two at most.
    best = max(np.corrcoef(a[max(0, s):n + min(0, s)], b[max(0, -s):n - max(0, s)])[0, 1] for s in range(-3, 4))
    assert best > 0.97, best
    assert in_process_s < ffmpeg_s, (in_process_s, ffmpeg_s)


def test_wav_and_gain_are_handled_in_process(speech_24k):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(speech_24k)
    plain = pcm_to_phone_audio(SpeechAudio(buffer.getvalue(), "wav", 24000))
    louder = pcm_to_phone_audio(SpeechAudio(buffer.getvalue(), "wav", 24000), gain_db=6.0)
    assert plain is not None and louder is not None and len(plain) == len(louder)
    ratio = np.abs(ulaw_to_linear(louder)).mean() / np.abs(ulaw_to_linear(plain)).mean()
    assert 1.7 < ratio < 2.2  # +6 dB ≈ ×2 in amplitude (μ-law steps blur it a little)


def test_mp3_and_stereo_are_left_to_ffmpeg():
    assert pcm_to_phone_audio(SpeechAudio(b"ID3...", "mp3", 24000)) is None
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 1600)
    assert pcm_to_phone_audio(SpeechAudio(buffer.getvalue(), "wav", 8000)) is None
