"""Synthesised speech made into what Asterisk plays: 8 kHz μ-law, in-process (soxr, audioop) or by ffmpeg."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

from ..errors import AudioError
from ..types import SpeechAudio


def run_ffmpeg(args: list[str], *, ffmpeg: str = "ffmpeg", data: bytes | None = None,
               timeout: float = 10.0) -> bytes:
    """Run ffmpeg quietly with ``args`` (``data`` on stdin); return its stdout.

    Raises:
        AudioError: ffmpeg is missing, took longer than ``timeout``, or failed (with its last error line).
    """
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    try:
        result = subprocess.run(command, input=data, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise AudioError(f"ffmpeg not found ({ffmpeg!r}); install it: apt-get install ffmpeg") from None
    except subprocess.TimeoutExpired:
        raise AudioError(f"ffmpeg took longer than {timeout:g} s") from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"ffmpeg failed ({result.returncode}): {message[-1] if message else 'no output'}")
    return result.stdout


def resample(pcm: bytes, rate: int, target_rate: int, *, ffmpeg: str = "ffmpeg", timeout: float = 20.0) -> bytes:
    """Mono s16le PCM from ``rate`` to ``target_rate`` (ffmpeg low-pass filters on the way)."""
    if rate == target_rate:
        return pcm
    return run_ffmpeg(["-f", "s16le", "-ar", str(rate), "-ac", "1", "-i", "pipe:0",
                       "-ar", str(target_rate), "-f", "s16le", "pipe:1"], ffmpeg=ffmpeg, data=pcm, timeout=timeout)


def speech_to_pcm(speech: SpeechAudio, sample_rate: int, *, gain_db: float = 0.0, ffmpeg: str = "ffmpeg",
                  timeout: float = 10.0) -> bytes:
    """``speech`` as 16-bit mono PCM at ``sample_rate`` (what a live media leg sends): in-process
    for PCM, WAV and μ-law (soxr, audioop), by ffmpeg for anything else (MP3)."""
    pcm = _linear(speech)
    if pcm is None:
        encoded = run_ffmpeg(["-i", "pipe:0", *(["-af", f"volume={gain_db}dB"] if gain_db else []),
                              "-ar", str(sample_rate), "-ac", "1", "-f", "s16le", "pipe:1"],
                             ffmpeg=ffmpeg, data=speech.data, timeout=timeout)
        return encoded
    linear, rate = pcm
    return _resampled(linear, rate, sample_rate, gain_db)


class SpeechStream:
    """Streamed speech (chunks of one sentence, as a streaming TTS sends them) made into PCM at
    ``sample_rate`` with one resampler for the whole stream: resampling each chunk on its own
    would put a filter edge, a faint click, at every chunk boundary. Encodings that are not raw
    (MP3) go through :func:`speech_to_pcm` chunk by chunk."""

    def __init__(self, sample_rate: int, *, gain_db: float = 0.0, ffmpeg: str = "ffmpeg", timeout: float = 10.0,
                 quality: str = "HQ") -> None:
        self.sample_rate = sample_rate
        # soxr's quality: HQ holds back about 65 ms of a stream fed in 20 ms pieces, MQ 26 ms, QQ
        # (cubic) none: what a live stream that is waited on can afford.
        self.quality = quality
        self.gain_db = gain_db
        self.ffmpeg = ffmpeg
        self.timeout = timeout
        self._resampler: Any = None
        self._rate = 0

    def feed(self, speech: SpeechAudio) -> bytes:
        if speech.encoding not in ("s16le", "mulaw"):
            return speech_to_pcm(speech, self.sample_rate, gain_db=self.gain_db, ffmpeg=self.ffmpeg, timeout=self.timeout)
        linear = _linear(speech)
        assert linear is not None
        pcm, rate = linear
        return self._convert(pcm, rate, last=False)

    def finish(self) -> bytes:
        """What the resampler still holds (its filter's delay), at the end of the sentence."""
        return self._convert(b"", self._rate, last=True) if self._resampler is not None else b""

    def _convert(self, pcm: bytes, rate: int, *, last: bool) -> bytes:
        import numpy as np
        import soxr

        if rate == self.sample_rate and self._resampler is None:
            return _resampled(pcm, rate, rate, self.gain_db)
        if self._resampler is None or rate != self._rate:
            self._resampler = soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32", quality=self.quality)
            self._rate = rate
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
        out = self._resampler.resample_chunk(samples, last=last)
        if self.gain_db:
            out = out * (10 ** (self.gain_db / 20))
        return bytes(np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes())


def ulaw_to_pcm(ulaw: bytes, rate: int, sample_rate: int) -> bytes:
    """Headerless μ-law (our prompts) → 16-bit PCM at ``sample_rate``."""
    return _resampled(_audioop().ulaw2lin(ulaw, 2), rate, sample_rate, 0.0)


class UlawEncoder:
    """The caller's 16-bit PCM at ``rate``, frame by frame, as 8 kHz μ-law (a conversation engine's
    input); wideband audio is brought down to 8 kHz with the converter's state kept between frames,
    so that frame edges leave no clicks."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._state: Any = None
        self._audioop = _audioop()

    def encode(self, pcm: bytes) -> bytes:
        pcm = pcm[: len(pcm) // 2 * 2]
        if self.rate != 8000:
            pcm, self._state = self._audioop.ratecv(pcm, 2, 1, self.rate, 8000, self._state)
        return bytes(self._audioop.lin2ulaw(pcm, 2))


def _audioop() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # audioop in 3.11/3.12
        import audioop
    return audioop


def _linear(speech: SpeechAudio) -> tuple[bytes, int] | None:
    """(16-bit PCM, its rate) of raw PCM, 16-bit mono WAV or μ-law; None for what needs ffmpeg."""
    if speech.encoding == "s16le":
        return speech.data[: len(speech.data) // 2 * 2], speech.sample_rate
    if speech.encoding == "mulaw":
        return _audioop().ulaw2lin(speech.data, 2), speech.sample_rate
    if speech.encoding == "wav":
        try:
            with wave.open(io.BytesIO(speech.data)) as wav:
                if wav.getnchannels() == 1 and wav.getsampwidth() == 2:
                    return wav.readframes(wav.getnframes()), wav.getframerate()
        except (wave.Error, EOFError):
            pass
    return None


def _resampled(pcm: bytes, rate: int, target_rate: int, gain_db: float) -> bytes:
    import numpy as np
    import soxr

    if rate == target_rate and not gain_db:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
    if rate != target_rate:
        samples = soxr.resample(samples, rate, target_rate)
    if gain_db:
        samples = samples * (10 ** (gain_db / 20))
    return bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


def write_phone_audio(
    speech: SpeechAudio,
    destination: str | os.PathLike[str],
    *,
    ffmpeg: str = "ffmpeg",
    gain_db: float = 0.0,
    timeout: float = 10.0,
    in_process: bool = True,
) -> Path:
    """Convert ``speech`` to headerless 8 kHz mono μ-law at ``destination`` (a ``.ulaw`` path).

    PCM (and 16-bit mono WAV) is converted in this process when ``in_process`` and the libraries
    are there (see :func:`pcm_to_phone_audio`); anything else by ffmpeg. The file is written under
    a temporary name and renamed, so Asterisk never plays half a file.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    input_args = {
        "s16le": ["-f", "s16le", "-ar", str(speech.sample_rate), "-ac", "1"],
        "mulaw": ["-f", "mulaw", "-ar", str(speech.sample_rate), "-ac", "1"],
        "wav": [],
        "mp3": [],
    }[speech.encoding]
    filters = ["-af", f"volume={gain_db}dB"] if gain_db else []
    _ensure_space(destination.parent, _ulaw_bytes(speech))
    handle, temp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".ulaw", dir=destination.parent)
    os.close(handle)
    try:
        if speech.encoding == "mulaw" and speech.sample_rate == 8000 and not gain_db:
            # Already what Asterisk plays (Google TTS MULAW, Realtime audio/pcmu): no ffmpeg run.
            Path(temp_name).write_bytes(speech.data)
        elif in_process and (converted := pcm_to_phone_audio(speech, gain_db)) is not None:
            Path(temp_name).write_bytes(converted)
        else:
            run_ffmpeg([*input_args, "-i", "pipe:0", *filters, "-ar", "8000", "-ac", "1", "-f", "mulaw", temp_name],
                       ffmpeg=ffmpeg, data=speech.data, timeout=timeout)
        if os.path.getsize(temp_name) == 0:
            _ensure_space(destination.parent, 1)
            raise AudioError("ffmpeg produced no audio")
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, destination)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return destination


def _ulaw_bytes(speech: SpeechAudio) -> int:
    """About how many bytes the 8 kHz μ-law answer will take (1 byte per sample)."""
    if speech.encoding in ("s16le", "wav"):
        return int(len(speech.data) / 2 * 8000 / max(speech.sample_rate, 1))
    if speech.encoding == "mulaw":
        return int(len(speech.data) * 8000 / max(speech.sample_rate, 1))
    return len(speech.data) * 4  # mp3: roughly 1:4 against 8 kHz μ-law at typical TTS bitrates


def _ensure_space(directory: Path, needed: int) -> None:
    """A full disk is named as such (ffmpeg would only leave an empty or cut file behind)."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < needed + 4096:
        raise AudioError(f"no space left on the device for the answer in {directory} "
                         f"({free} bytes free, about {needed} needed)")


def pcm_to_phone_audio(speech: SpeechAudio, gain_db: float = 0.0) -> bytes | None:
    """16-bit mono PCM (raw or WAV) → 8 kHz μ-law without starting a process, or None when this
    input or this machine needs ffmpeg.

    soxr resamples (band-limited, so a 24 kHz voice does not alias into the phone band) and
    audioop encodes G.711 μ-law (the standard library's up to 3.12, audioop-lts from 3.13). An
    ffmpeg process costs 40-90 ms per sentence and a CPU spike each; this takes about 1 ms.
    """
    if speech.encoding not in ("s16le", "wav"):
        return None
    try:
        import warnings

        import numpy as np
        import soxr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # audioop in 3.11/3.12
            import audioop
    except ImportError:
        return None
    pcm, rate = speech.data, speech.sample_rate
    if speech.encoding == "wav":
        try:
            with wave.open(io.BytesIO(pcm)) as wav:
                if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                    return None
                rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
        except (wave.Error, EOFError):
            return None
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
    if rate != 8000:
        samples = soxr.resample(samples, rate, 8000)
    if gain_db:
        samples = samples * (10 ** (gain_db / 20))
    linear = np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()
    return audioop.lin2ulaw(linear, 2)
