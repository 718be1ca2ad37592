"""End of the question by voice activity: ``EAGI(voiceassist,listen,<file.wav>,<grace_s>,<end_ms>,<max_s>)``.

The design card's dialplan ends a question after a fixed 2 s of silence (WaitForSilence). Here an
EAGI process reads the caller's audio from fd 3 (8 kHz signed linear, 20 ms frames), asks a voice
activity detector (WebRTC's, via ``webrtcvad``) about each frame, and ends the question after
``end_ms`` (default 700) of no voice once the caller has spoken, writing the WAV itself.

Speech is judged on frames, not on volume: background noise does not keep the question open, and a
quiet caller's pause between two clauses (usually 200-500 ms) does not end it. The wall clock, not
the frame count, measures the trailing silence: a channel that stops sending frames while the
caller is silent (no comfort noise, Local channels) still ends the question.

Tells the dialplan, like WaitForNoise/WaitForSilence would: ``VA_HEARD`` = NOISE (the caller
spoke) / TIMEOUT (nothing within ``grace_s``) / HANGUP, and ``VA_SILENCE_WAITED`` = the trailing
silence waited in ms (the turn then measures end of speech → first audio).

Imports only the AGI protocol, the dialplan contract (which validates its arguments) and
webrtcvad: it starts while the beep plays and must be listening before the caller's first words
overflow the audio pipe (about 4 s of slin8).
"""

from __future__ import annotations

import os
import select
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..audio.endpointing import (
    FRAME_BYTES,
    FRAME_S,
    SAMPLE_RATE,
    Endpointer,
    EndpointSettings,
    VoiceDetector,
    webrtc_detector,
)
from ..logs import logger
from .agi import AGISession
from .dialplan import ListenRequest, listener_failed, listener_heard

AUDIO_FD = 3


@dataclass
class Outcome:
    heard: str  # NOISE, TIMEOUT or HANGUP
    silence_waited_ms: int
    speech_s: float  # audio received, seconds


def listen(audio_fd: int, target: Path, detector: VoiceDetector, settings: EndpointSettings,
           hung_up: Callable[[], bool] = lambda: False) -> Outcome:
    """Read the caller's audio until the end of the question; write it to ``target`` (WAV)."""
    endpointer = Endpointer(detector, settings, time.monotonic())
    pending = b""
    frames: list[bytes] = []
    heard = None
    while heard is None:
        if hung_up():
            heard = "HANGUP"
            break
        readable, _, _ = select.select([audio_fd], [], [], FRAME_S)
        # Everything waiting in the pipe is read before the verdict: after a stall (a busy CPU, the
        # preparing thread holding the interpreter) the newest frames may be the caller talking
        # again, and judging on the older, silent ones would cut the question short.
        while readable:
            chunk = os.read(audio_fd, 65536)
            if not chunk:  # Asterisk closed the pipe: the channel is gone
                heard = "HANGUP"
                break
            pending += chunk
            while len(pending) >= FRAME_BYTES:
                frame, pending = pending[:FRAME_BYTES], pending[FRAME_BYTES:]
                frames.append(frame)
                endpointer.feed(frame, time.monotonic())
            readable, _, _ = select.select([audio_fd], [], [], 0)
        if heard is not None:
            break
        heard = endpointer.verdict(time.monotonic())
    target.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(target), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(b"".join(frames))
    waited = settings.end_ms if endpointer.ended_by_silence else 0
    return Outcome(heard, waited, len(frames) * FRAME_S)


def settings_for(request: ListenRequest) -> EndpointSettings:
    """The request's grace, end of question and longest question; the defaults where unset."""
    settings = EndpointSettings()
    for name in ("grace_s", "end_ms", "max_s"):
        value = getattr(request, name)
        if value is not None:
            setattr(settings, name, value)
    return settings


def has_audio(session: AGISession) -> bool:
    """Whether this is EAGI (the caller's audio on fd 3); if not, say so and tell the dialplan
    (VA_HEARD=FAILED: it records the question the other way)."""
    if session.env.get("agi_enhanced", "0.0") == "1.0":
        return True
    logger.error("[AGI] listen needs EAGI(voiceassist,listen,<file.wav>,...), not AGI: got %r", session.arguments())
    listener_failed(session)
    return False


def run_listener(session: AGISession, request: ListenRequest) -> Outcome | None:
    """The ``listen`` AGI action on a validated request (the recording inside this call's
    directory), once :func:`has_audio` said yes. Tells the dialplan what it heard; returns the
    outcome, or None when it could not listen (VA_HEARD=FAILED) or the caller hung up."""
    target = request.recording
    settings = settings_for(request)
    try:
        detector = webrtc_detector()
    except ImportError:
        logger.error("[AGI] listen: the webrtcvad module is missing (pip install webrtcvad-wheels)")
        listener_failed(session)
        return None
    try:
        outcome = listen(AUDIO_FD, target, detector, settings, lambda: session.hung_up)
    except OSError as exc:
        logger.error("[AGI] listen: %s", exc)
        listener_failed(session)
        return None
    logger.info("[AGI] %s question %s: %s, %.1f s of audio, ended after %d ms of silence",
                request.call.uniqueid, target.name, outcome.heard, outcome.speech_s,
                outcome.silence_waited_ms)
    if outcome.heard == "HANGUP":
        return None
    listener_heard(session, outcome.heard, outcome.silence_waited_ms)
    return outcome
