"""What the caller says in a live call, recognised while it is said.

An :class:`Utterance` starts when the caller starts talking (with the audio just before, so the
first syllable is not lost) and gets every frame until the conversation decides the caller has
finished. With a streaming recogniser (``StreamingSpeechToText``: Google's gRPC stream) the
audio goes to it as it arrives: its final words are there a few hundred milliseconds after the
caller stops, and the conversation may start preparing the answer on them before the end-of-turn
silence is over. Otherwise (OpenAI's transcription, the offline recogniser), or when the stream
fails, the whole utterance is transcribed by the chain once it is over.

A recogniser that ends its stream at a pause (single-utterance mode) while the caller goes on
gets a new stream for the rest; the words of all of them make the utterance.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import ProviderError, VoiceAssistError
from ..logs import logger
from ..providers.base import StreamingSpeechToText
from ..types import Recording, TranscriptEvent
from .assistant import Assistant
from .channel import CallLog

_END = b""
STREAM_PIECE_SECONDS = 0.04       # the caller's audio goes to a streaming recogniser in pieces this long


@dataclass(frozen=True)
class Heard:
    """What the caller said: the words (empty: nothing recognisable), who recognised them, and
    when (``final_at``: time.monotonic() of the last final words)."""

    text: str
    confidence: float | None
    provider: str | None
    audio: bytes
    final_at: float
    error: VoiceAssistError | None = None


class _Stream:
    """One recogniser stream: audio in through a queue, events out on a reader thread."""

    def __init__(self, stt: StreamingSpeechToText, sample_rate: int, on_final: "Utterance") -> None:
        self.audio: queue.Queue[bytes] = queue.Queue()
        self.finals: list[str] = []
        self.confidences: list[float] = []
        self.ended = threading.Event()       # no more events will come
        self.error: BaseException | None = None
        self._stt = stt
        self._rate = sample_rate
        self._utterance = on_final
        self._thread = threading.Thread(target=self._read, daemon=True, name="voiceassist-stt")
        self._thread.start()

    def _frames(self) -> Iterator[bytes]:
        while True:
            frame = self.audio.get()
            if frame is _END:
                return
            yield frame

    def _read(self) -> None:
        try:
            for event in self._stt.stream(self._frames(), self._rate):
                self._event(event)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended.set()
            self._utterance.stream_ended()

    def _event(self, event: TranscriptEvent) -> None:
        if event.is_final and event.text.strip():
            self.finals.append(event.text.strip())
            if event.confidence is not None:
                self.confidences.append(event.confidence)
            self._utterance.final_words()
        elif event.text.strip():
            self._utterance.guessed_words(event.text.strip())

    def close(self) -> None:
        self.audio.put(_END)


class Utterance:
    """One thing the caller says (see the module's docstring). Fed from the conversation's thread;
    the result comes from :meth:`finish` once :meth:`done` is set."""

    def __init__(self, assistant: Assistant, sample_rate: int, log: CallLog, before: bytes = b"",
                 said_before: str = "", on_words: Callable[[str, bool], None] | None = None) -> None:
        self.assistant = assistant
        self._on_words = on_words  # told the words so far as the recogniser hears them (the console)
        self.sample_rate = sample_rate
        self.log = log
        self.said_before = said_before   # words of an earlier utterance this one continues
        self.started = time.monotonic()
        self._audio = bytearray(before)
        self._unsent = bytearray()        # fed audio not yet handed to the recogniser
        self._piece_bytes = int(sample_rate * STREAM_PIECE_SECONDS) * 2
        self._lock = threading.Lock()
        self._streams: list[_Stream] = []
        self._stt: StreamingSpeechToText | None = None
        self._provider: str | None = None
        self._final_at = 0.0
        self._finished = False
        self._settling = False
        self._result: Heard | None = None
        self.done = threading.Event()
        self.words_changed = threading.Event()  # new final words (the conversation may prepare an answer)
        self._choose_recogniser()
        if self._stt is not None and before:
            self._open_stream().audio.put(bytes(before))

    def _choose_recogniser(self) -> None:
        """The first provider of the chain, if it streams; a chain that cannot even build it
        falls back to batch recognition (which tries the rest of the chain)."""
        try:
            chain = self.assistant.providers("stt")
            first = chain.provider(chain.names[0])
        except VoiceAssistError as exc:
            self.log("STT", f"streaming recognition unavailable ({exc}); transcribing each utterance", logging.WARNING)
            return
        if isinstance(first, StreamingSpeechToText):
            self._stt, self._provider = first, first.name

    def _open_stream(self) -> _Stream:
        assert self._stt is not None
        stream = _Stream(self._stt, self.sample_rate, self)
        with self._lock:
            self._streams.append(stream)
        return stream

    # -- from the conversation's thread ---------------------------------------------------------------
    def feed(self, frame: bytes) -> None:
        self._audio += frame
        if self._stt is None:
            return
        # The recogniser gets the audio in pieces of STREAM_PIECE_SECONDS, not 20 ms frames: half
        # the requests and of its thread's wake-ups (with 60 ms pieces gRPC's thread went from 0.10
        # to 0.02 cores at 50 calls), for words final at most 20 ms later (Google recommends 100 ms
        # pieces; no difference in end of speech to first audio was measured with 40 or 60 ms).
        self._unsent += frame
        if len(self._unsent) >= self._piece_bytes:
            self._send_unsent()

    def _send_unsent(self) -> None:
        if not self._unsent:
            return
        piece, self._unsent = bytes(self._unsent), bytearray()
        with self._lock:
            current = self._streams[-1] if self._streams else None
        if current is None or current.ended.is_set():
            if current is not None and current.error is not None:
                return  # the stream failed: the rest is transcribed whole at the end
            current = self._open_stream()  # the recogniser ended its stream at a pause; the caller goes on
        current.audio.put(piece)

    def words_so_far(self) -> str:
        """The final words recognised so far (with the earlier utterance's)."""
        with self._lock:
            words = [w for s in self._streams for w in s.finals]
        return " ".join([self.said_before, *words]).strip()

    def finish(self) -> None:
        """The caller has finished: end the streams; :attr:`done` is set when the words are in."""
        if self._stt is not None:
            self._send_unsent()
        with self._lock:
            self._finished = True
            streams = list(self._streams)
        if self._stt is None or not streams or any(s.error is not None for s in streams):
            threading.Thread(target=self._transcribe_whole, daemon=True, name="voiceassist-stt").start()
            return
        for stream in streams:
            stream.close()
        self.stream_ended()

    def cancel(self) -> None:
        """The caller hung up: stop listening."""
        with self._lock:
            self._finished = True
            streams = list(self._streams)
        for stream in streams:
            stream.close()

    def result(self) -> Heard:
        assert self._result is not None
        return self._result

    @property
    def seconds(self) -> float:
        return len(self._audio) / 2 / self.sample_rate

    # -- from the recogniser's threads ---------------------------------------------------------------
    def final_words(self) -> None:
        self._final_at = time.monotonic()
        self.words_changed.set()
        self._tell_words("")

    def guessed_words(self, guess: str) -> None:
        """The recogniser's current guess at the words after the final ones (interim results)."""
        self._tell_words(guess)

    def _tell_words(self, guess: str) -> None:
        if self._on_words is not None:
            try:
                self._on_words(" ".join(part for part in (self.words_so_far(), guess) if part), False)
            except Exception as exc:  # the console never costs the caller their words
                logger.debug("[STT] words not told: %s", exc)

    def stream_ended(self) -> None:
        """A stream ended; once the utterance is finished and every stream is over, the result is in."""
        with self._lock:
            if not self._finished or self._settling or not all(s.ended.is_set() for s in self._streams):
                return
            self._settling = True
            failed = next((s.error for s in self._streams if s.error is not None), None)
        if failed is not None:
            self.log("STT", f"{self._provider} stream failed ({failed}); transcribing the utterance whole",
                     logging.WARNING)
            self._transcribe_whole()
            return
        confidences = [c for s in self._streams for c in s.confidences]
        self._settle(Heard(self.words_so_far(), min(confidences) if confidences else None, self._provider,
                           bytes(self._audio), self._final_at or time.monotonic()))

    def _transcribe_whole(self) -> None:
        recording = Recording(bytes(self._audio), self.sample_rate)
        try:
            transcript, provider = self.assistant.providers("stt").call(lambda stt: stt.transcribe(recording))
        except (ProviderError, VoiceAssistError) as exc:
            self._settle(Heard(self.said_before, None, None, bytes(self._audio), time.monotonic(), exc))
            return
        text = " ".join([self.said_before, transcript.text.strip()]).strip()
        self._settle(Heard(text, transcript.confidence, provider, bytes(self._audio), time.monotonic()))

    def _settle(self, heard: Heard) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self._result = heard
        self.done.set()
