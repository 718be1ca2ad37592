"""Where a caller's question ends, judged on voice activity frame by frame and on the clock.

A voice activity detector (WebRTC's, via ``webrtcvad``) says whether each 20 ms frame holds
speech; :class:`Endpointer` decides when the caller has started (enough voice in a short window)
and finished (``end_ms`` without voice after speech, measured on the wall clock, so a channel
that sends no frames while the caller is silent still ends the question). Background noise does
not keep a question open, and a pause between two clauses (usually 200-500 ms) does not end it.

A real-time call listens all the time: :class:`SpeechTracker` follows a continuous stream and
says where each utterance starts and ends; :class:`VoiceOnset` decides, while the assistant
speaks, whether the caller has really started talking (barge-in): enough voiced frames, loud
enough that the assistant's own voice coming back at echo level does not count, and long enough
that a cough or a click does not.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

SAMPLE_RATE = 8000
FRAME_BYTES = 320  # 20 ms of 16-bit mono at 8 kHz
FRAME_S = 0.02


class VoiceDetector(Protocol):
    def is_speech(self, frame: bytes) -> bool: ...


def webrtc_detector(aggressiveness: int = 2, sample_rate: int = SAMPLE_RATE) -> VoiceDetector:
    """WebRTC's detector for 20 ms frames at ``sample_rate`` (8000, 16000, 32000 or 48000)."""
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)

    class _WebRTC:
        def is_speech(self, frame: bytes) -> bool:
            return bool(vad.is_speech(frame, sample_rate))

    return _WebRTC()


def level_dbfs(frame: bytes) -> float:
    """The frame's RMS level in dBFS (0 dBFS: an RMS of full scale, 32768); -inf for digital silence."""
    samples = np.frombuffer(frame, dtype="<i2", count=len(frame) // 2).astype(np.float64)
    if samples.size == 0:
        return -math.inf
    # One dot product instead of numpy's mean: a call per 20 ms frame per call in progress, where
    # numpy's per-call overhead was most of the cost (5 us instead of 21 us).
    energy = float(np.dot(samples, samples))
    return 10 * math.log10(energy / samples.size / 32768.0**2) if energy > 0 else -math.inf


@dataclass
class EndpointSettings:
    grace_s: float = 8.0  # the caller must start within this
    end_ms: int = 700  # no voice this long after speech ends the question
    max_s: float = 60.0  # the longest question
    start_ms: int = 120  # this much voice (within start_window_ms) counts as the caller starting
    start_window_ms: int = 300


class Endpointer:
    """Decides, frame by frame and by the clock, when the caller has started and finished."""

    def __init__(self, detector: VoiceDetector, settings: EndpointSettings, now: float) -> None:
        self.detector = detector
        self.settings = settings
        self.started_at = now
        self.speaking = False
        self.last_voice = now
        self.ended_by_silence = False
        self._recent: list[bool] = []

    def feed(self, frame: bytes, now: float) -> None:
        voiced = self.detector.is_speech(frame)
        if voiced:
            self.last_voice = now
        if not self.speaking:
            self._recent.append(voiced)
            window = max(1, self.settings.start_window_ms // 20)
            del self._recent[:-window]
            if sum(self._recent) * 20 >= self.settings.start_ms:
                self.speaking = True

    def verdict(self, now: float) -> str | None:
        """NOISE (question complete), TIMEOUT (never started), or None (keep listening)."""
        if self.speaking and (now - self.last_voice) * 1000 >= self.settings.end_ms:
            self.ended_by_silence = True
            return "NOISE"
        if now - self.started_at >= self.settings.max_s:
            return "NOISE" if self.speaking else "TIMEOUT"
        if not self.speaking and now - self.started_at >= self.settings.grace_s:
            return "TIMEOUT"
        return None


@dataclass(frozen=True)
class LiveListening:
    """How a real-time call hears the caller (the ``[live]`` settings it takes)."""

    end_ms: int = 500            # no voice this long after speech ends an utterance
    start_ms: int = 120          # this much voice within start_window_ms starts one
    start_window_ms: int = 300
    max_s: float = 30.0          # the longest utterance
    min_level_dbfs: float = -50.0  # quieter frames are never voice (line hiss that fools the detector)


UtteranceEdge = Literal["start", "end"]


class SpeechTracker:
    """Follows a continuous stream of 20 ms frames: where each utterance starts and ends.

    ``feed`` returns ``"start"`` on the frame that makes the caller count as talking (the
    utterance began ``start_window_ms`` or so earlier: keep that much audio before it), ``"end"``
    once ``end_ms`` passed without voice (or the utterance reached ``max_s``), else None. Time is
    the caller's audio time (frames fed), so a late thread does not shorten a pause.
    """

    def __init__(self, detector: VoiceDetector, settings: LiveListening) -> None:
        self.detector = detector
        self.settings = settings
        self.speaking = False
        self.frames = 0                 # frames fed so far (20 ms each)
        self.started_frame = 0          # where the current/last utterance started
        self.last_voice_frame = -1      # the last voiced frame
        self._recent: deque[bool] = deque(maxlen=max(1, settings.start_window_ms // 20))

    def feed(self, frame: bytes) -> UtteranceEdge | None:
        return self.feed_verdict(self.detector.is_speech(frame), level_dbfs(frame))

    def feed_verdict(self, speech: bool, level: float) -> UtteranceEdge | None:
        """One frame, by the detector's verdict and its level (when the caller's thread has
        taken them once for this tracker and the barge-in detector)."""
        voiced = speech and level >= self.settings.min_level_dbfs
        self.frames += 1
        if voiced:
            self.last_voice_frame = self.frames
        if not self.speaking:
            self._recent.append(voiced)
            if sum(self._recent) * 20 >= self.settings.start_ms:
                self.speaking = True
                self.started_frame = max(0, self.frames - len(self._recent))
                self._recent.clear()
                return "start"
            return None
        silent_ms = (self.frames - self.last_voice_frame) * 20
        too_long = (self.frames - self.started_frame) * 20 >= self.settings.max_s * 1000
        if silent_ms >= self.settings.end_ms or too_long:
            self.speaking = False
            return "end"
        return None

    def start_now(self, frames_back: int) -> None:
        """The caller counts as talking from ``frames_back`` frames ago (a barge-in decided it)."""
        self.speaking = True
        self.last_voice_frame = self.frames
        self.started_frame = max(0, self.frames - frames_back)
        self._recent.clear()

    def silent_ms(self) -> int:
        """How long the caller has been quiet (since the last voiced frame)."""
        return (self.frames - self.last_voice_frame) * 20 if self.last_voice_frame >= 0 else self.frames * 20


# How much quieter than what we play its echo is at least taken to be (dB). G.168 expects a line
# echo canceller to cope with 6 dB of echo return loss; a phone's own hybrid and echo canceller
# make the echo reaching us 20-40 dB quieter. 15 dB leaves room for a caller a little quieter
# than the assistant while a -20 dB echo never counts.
ECHO_RETURN_LOSS_DB = 15.0


@dataclass(frozen=True)
class BargeIn:
    """When the caller's voice interrupts the assistant (the ``[live]`` barge_in settings)."""

    enabled: bool = True
    min_voiced_ms: int = 200      # voiced audio within window_ms that counts as the caller talking
    window_ms: int = 300
    min_level_dbfs: float = -35.0  # the assistant's own voice comes back 20 dB or more below this


class VoiceOnset:
    """While the assistant speaks: has the caller really started talking?

    A frame counts when the detector calls it voice *and* it is at least ``min_level_dbfs`` loud;
    ``min_voiced_ms`` of such frames within ``window_ms`` is an onset. A cough (100-200 ms) or a
    click (a frame or two) is too short; the assistant's answer leaking back through the phone's
    hybrid is too quiet.
    """

    def __init__(self, detector: VoiceDetector, settings: BargeIn) -> None:
        self.detector = detector
        self.settings = settings
        self._recent: deque[bool] = deque(maxlen=max(1, settings.window_ms // 20))

    def reset(self) -> None:
        self._recent.clear()

    def feed(self, frame: bytes) -> bool:
        return self.feed_verdict(self.detector.is_speech(frame), level_dbfs(frame))

    def feed_verdict(self, speech: bool, level: float, playing_dbfs: float | None = None) -> bool:
        """True on the frame that completes an onset (and the window starts again).

        ``playing_dbfs``: the level of what the assistant is playing. Its echo comes back at least
        ECHO_RETURN_LOSS_DB quieter (a phone's hybrid and echo canceller), so a frame must be
        louder than that as well as ``min_level_dbfs`` to count as the caller."""
        if not self.settings.enabled:
            return False
        floor = self.settings.min_level_dbfs
        if playing_dbfs is not None:
            floor = max(floor, playing_dbfs - ECHO_RETURN_LOSS_DB)
        self._recent.append(speech and level >= floor)
        if sum(self._recent) * 20 >= self.settings.min_voiced_ms:
            self._recent.clear()
            return True
        return False
