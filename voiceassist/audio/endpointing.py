"""Where a caller's question ends, judged on voice activity frame by frame and on the clock.

A voice activity detector (WebRTC's, via ``webrtcvad``) says whether each 20 ms frame holds
speech; :class:`Endpointer` decides when the caller has started (enough voice in a short window)
and finished (``end_ms`` without voice after speech, measured on the wall clock, so a channel
that sends no frames while the caller is silent still ends the question). Background noise does
not keep a question open, and a pause between two clauses (usually 200-500 ms) does not end it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SAMPLE_RATE = 8000
FRAME_BYTES = 320  # 20 ms of 16-bit mono at 8 kHz
FRAME_S = 0.02


class VoiceDetector(Protocol):
    def is_speech(self, frame: bytes) -> bool: ...


def webrtc_detector(aggressiveness: int = 2) -> VoiceDetector:
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)

    class _WebRTC:
        def is_speech(self, frame: bytes) -> bool:
            return bool(vad.is_speech(frame, SAMPLE_RATE))

    return _WebRTC()


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
