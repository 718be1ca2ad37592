"""A live transcript of a call between people (not the assistant's): each party's voice, as
Asterisk hands it over, cut into utterances by voice detection, each transcribed (streaming where
the recogniser allows, so its words show while they are spoken), each final one stored as a line
of the call, labelled with who said it.

The lines are stored as the call's turns (``speaker`` caller or callee, the words as the
transcript, no reply), through the journal like every turn: the spool takes them while the
database is away.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..audio.endpointing import LiveListening, SpeechTracker, webrtc_detector
from ..types import CallInfo, TurnRecord
from .assistant import Assistant
from .channel import CallLog
from .listening import Utterance

FRAME_MS = 20
PRE_ROLL_FRAMES = 15  # 300 ms kept before an utterance's start (its first syllable)
SPEAKERS = ("caller", "callee")
# Between people, a pause of 700 ms ends a line (a question to the assistant ends at 500 ms).
LINE_ENDS_AFTER_MS = 700

Tell = Callable[[dict[str, Any]], None]


class CallTranscript:
    """Both parties' lines of one call, numbered in the order they start, stored and told."""

    def __init__(self, assistant: Assistant, call: CallInfo, tell: Tell) -> None:
        self.assistant = assistant
        self.call = call
        self.tell = tell
        self.log = CallLog(None, call.uniqueid)
        self._lock = threading.Lock()
        self._lines = 0
        self._open = 0

    def speaker(self, name: str, sample_rate: int) -> SpeakerTranscript:
        if name not in SPEAKERS:
            raise ValueError(f"speaker {name!r}: one of {SPEAKERS}")
        with self._lock:
            self._open += 1
        return SpeakerTranscript(self, name, sample_rate)

    def words(self, speaker: str, line: int, text: str, final: bool) -> None:
        self.tell({"type": "transcript.words", "call": self.call.uniqueid, "at": time.time(), "speaker": speaker,
                   "line": line, "text": text, "final": final})

    def next_line(self) -> int:
        with self._lock:
            self._lines += 1
            return self._lines

    def store(self, record: TurnRecord) -> None:
        """The line stored with the call (not announced as an assistant's turn: no webhook, no turn
        counted in the metrics)."""
        try:
            self.assistant.journal().add_turn(self.call, record)
        except Exception as exc:  # StorageError, or a driver error: the transcript goes on
            self.log("DB", f"line {record.turn_number} NOT stored: {exc}", logging.ERROR)

    def speaker_done(self) -> bool:
        """One party's audio ended; True when it was the last."""
        with self._lock:
            self._open -= 1
            return self._open == 0


class SpeakerTranscript:
    """One party's audio: fed 16-bit PCM as it comes, in pieces of any size."""

    def __init__(self, transcript: CallTranscript, speaker: str, sample_rate: int) -> None:
        self.transcript = transcript
        self.speaker = speaker
        self.rate = sample_rate
        self._frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self._pending = bytearray()
        self._tracker = SpeechTracker(webrtc_detector(2, sample_rate),
                                      LiveListening(end_ms=LINE_ENDS_AFTER_MS, max_s=30.0))
        self._pre_roll: deque[bytes] = deque(maxlen=PRE_ROLL_FRAMES)
        self._utterance: Utterance | None = None
        self._line = 0
        self._started_at = 0.0
        self._workers: list[threading.Thread] = []

    def feed(self, pcm: bytes) -> None:
        self._pending += pcm
        while len(self._pending) >= self._frame_bytes:
            frame = bytes(self._pending[:self._frame_bytes])
            del self._pending[:self._frame_bytes]
            self._frame(frame)

    def _frame(self, frame: bytes) -> None:
        edge = self._tracker.feed(frame)
        if self._utterance is None:
            self._pre_roll.append(frame)
            if edge == "start":
                self._start()
            return
        self._utterance.feed(frame)
        if edge == "end":
            self._finish()

    def _start(self) -> None:
        line = self._line = self.transcript.next_line()
        before = b"".join(self._pre_roll)
        self._pre_roll.clear()
        self._started_at = time.time()
        self._utterance = Utterance(self.transcript.assistant, self.rate, self.transcript.log, before=before,
                                    on_words=lambda text, _final: self.transcript.words(self.speaker, line, text, False))

    def _finish(self) -> None:
        utterance, self._utterance = self._utterance, None
        assert utterance is not None
        utterance.finish()
        worker = threading.Thread(target=self._settle, args=(utterance, self._line, self._started_at), daemon=True,
                                  name=f"voiceassist-transcript-{self.speaker}")
        worker.start()
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]  # a long call: only the unsettled

    def _settle(self, utterance: Utterance, line: int, started_at: float) -> None:
        if not utterance.done.wait(30):
            self.transcript.log("TRANSCRIPT", f"{self.speaker} line {line}: no words within 30 s", logging.WARNING)
            return
        heard = utterance.result()
        if not heard.text:
            if heard.error is not None:
                self.transcript.log("TRANSCRIPT", f"{self.speaker} line {line}: {heard.error}", logging.WARNING)
            return
        self.transcript.words(self.speaker, line, heard.text, True)
        record = TurnRecord(turn_number=line, transcript=heard.text, stt_provider=heard.provider,
                            stt_confidence=heard.confidence, speaker=self.speaker,
                            started_at=dt.datetime.fromtimestamp(started_at, dt.timezone.utc),
                            timings={"recording": int(utterance.seconds * 1000)})
        self.transcript.store(record)

    def close(self, timeout: float = 30.0) -> None:
        """The party's audio ended: its last line is finished and every line settled."""
        if self._utterance is not None:
            self._finish()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
