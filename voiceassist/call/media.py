"""A live media leg: the caller's audio arriving as it is spoken, the assistant's audio going back.

The real-time conversation (``call/realtime.py``) talks to a :class:`MediaLeg` only, whatever
carries it: AudioSocket (``asterisk/audiosocket.py``: TCP frames we must pace ourselves) or
Asterisk's WebSocket channel (``asterisk/websocket_media.py``: Asterisk re-times what we send).
Audio is 16-bit signed little-endian mono PCM at the leg's ``sample_rate`` (8000, or 16000 for
wideband), the caller's in 20 ms frames.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

FRAME_SECONDS = 0.02


def frame_bytes(sample_rate: int) -> int:
    """Bytes in one 20 ms frame of 16-bit mono PCM at ``sample_rate``."""
    return int(sample_rate * FRAME_SECONDS) * 2


class MediaEventKind(enum.StrEnum):
    AUDIO = "audio"      # a frame of the caller's audio
    DTMF = "dtmf"        # the caller pressed a key
    TEXT = "text"        # words the caller's side typed rather than said (an AI-server connector's text.input)
    MARK = "mark"        # a point in the assistant's audio reached the caller (see MediaLeg.mark)
    CLOSED = "closed"    # the leg is gone: the caller hung up, or Asterisk closed it


@dataclass(frozen=True)
class MediaEvent:
    kind: MediaEventKind
    audio: bytes = b""   # AUDIO: PCM at the leg's rate (normally one 20 ms frame)
    digit: str = ""      # DTMF: 0-9, *, #, A-D
    mark: str = ""       # MARK: the name given to MediaLeg.mark
    text: str = ""       # TEXT: the words
    at: float = 0.0      # time.monotonic() when it arrived


@runtime_checkable
class MediaLeg(Protocol):
    """One call's live audio, both ways. ``next_event`` is for the conversation's thread; ``play``,
    ``stop_playing``, ``mark`` and ``hang_up`` may be called from any thread."""

    call_id: str          # the correlation id the control plane announced for this leg
    sample_rate: int      # of the audio both ways: 8000 or 16000

    def next_event(self, timeout: float) -> MediaEvent | None:
        """The next caller event, waiting at most ``timeout`` seconds (None: nothing came). After
        CLOSED, CLOSED again at once."""
        ...

    def play(self, pcm: bytes) -> None:
        """Queue ``pcm`` for the caller (returns at once). The transport delivers it in real time:
        20 ms frames, without gaps inside what was queued together, never faster than it plays."""
        ...

    def mark(self, name: str) -> None:
        """Queue a marker after the audio queued so far; a MARK event with ``name`` comes when the
        caller has been sent everything before it. (Markers queued before a ``stop_playing`` never come.)"""
        ...

    def stop_playing(self) -> float:
        """Drop the audio not yet sent to the caller (barge-in); return the seconds of queued audio
        that were sent since the queue was last empty (what the caller heard of the answer)."""
        ...

    def queued_seconds(self) -> float:
        """Seconds of queued audio not yet sent to the caller."""
        ...

    def audio_waiting(self) -> bool:
        """Whether the caller's audio has come and not been taken in yet (``next_event`` will
        have it soon): no frame for a while is then no quiet line. False when the transport
        cannot tell."""
        ...

    def hang_up(self) -> None:
        """End the leg (the conversation is over); Asterisk then goes on in the dialplan."""
        ...
