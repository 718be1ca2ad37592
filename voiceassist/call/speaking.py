"""An answer spoken into a live media leg while it is still being written.

A worker thread streams the chat model's reply, cuts it into sentences, synthesizes each one
(streamed where the provider streams, so the first audio exists after the provider's first
bytes, not after the whole sentence) and queues the audio on the leg as it comes. The caller
hears the first words of the first sentence while the rest is still being generated.

An answer may be *held*: prepared while the caller may still be talking (the recogniser's final
words came before the end-of-turn silence was over), its audio kept back until :meth:`commit`;
if the caller goes on talking it is cancelled unheard. :meth:`cancel` (barge-in, hang-up) stops
the worker and closes the model's and the voice's streams, which frees their connections.

The answer knows nothing of the conversation: it is given the leg, the providers and what to ask.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .. import deadline
from ..audio.conversion import SpeechStream
from ..audio.endpointing import level_dbfs
from ..errors import ProviderBadResponse
from ..providers.base import StreamingTextToSpeech, TextToSpeech
from ..text.speakable import MAX_REPLY_CHARS, SentenceSplitter, speakable
from ..types import Exchange, SpeechAudio, Stage, ToolCall, TurnRecord
from .actions import ActingReply, Action
from .assistant import Assistant
from .channel import CallLog
from .conversation import open_reply
from .media import MediaLeg

BYTES_PER_SAMPLE = 2


# An answer's audio kept with its turn, at most this long (the rest is still played).
MAX_KEPT_SECONDS = 120
# A sentence's audio goes to the caller once this much of it is ready (or all of it, if shorter):
# a streamed voice's first chunk is short, and handed over alone it would leave the caller a gap
# whenever the next chunk comes a moment late (seen with twenty calls at once).
FIRST_PIECE_SECONDS = 0.3


class _Cancelled(Exception):
    """The worker noticed the answer was cancelled (not an error: nobody is told)."""


@dataclass
class SpokenSentence:
    text: str
    seconds: float = 0.0      # audio queued for it so far


@dataclass
class AnswerProgress:
    """What the worker did, read by the conversation (under the answer's lock)."""

    sentences: list[SpokenSentence] = field(default_factory=list)
    queued_seconds: float = 0.0       # answer audio handed to the leg (not held)
    first_audio_at: float | None = None  # time.monotonic() of the first audio handed to the leg
    finished: bool = False            # the worker has ended (whole reply, error or cancel)
    error: BaseException | None = None
    level_dbfs: float | None = None   # the loudest audio queued (what its echo is measured against)


def _speech_chunks(tts: TextToSpeech, text: str) -> Iterator[SpeechAudio]:
    if isinstance(tts, StreamingTextToSpeech):
        return tts.synthesize_stream(text)
    return iter([tts.synthesize(text)])


def _close(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class SpokenAnswer:
    """One answer in a worker thread, its audio queued on ``leg`` (or held until :meth:`commit`).

    ``record`` receives the providers and timings (llm_first, llm, tts: the first sentence's
    first audio after its text was ready, first_audio: the answer's start to its first audio).
    ``on_done`` is called from the worker when it ends.
    """

    def __init__(self, assistant: Assistant, leg: MediaLeg, question: str, record: TurnRecord, log: CallLog, *,
                 history: Callable[[], list[Exchange]], held: bool = False, name: str = "",
                 on_done: Callable[[], None] = lambda: None, scripted: str | ToolCall | None = None,
                 memory: str = "", on_reply: Callable[[str], None] | None = None) -> None:
        self.assistant = assistant
        self._on_reply = on_reply  # told the reply so far, sentence by sentence (the console's live view)
        self.leg = leg
        self.question = question
        self.record = record
        self.log = log
        self._history = history
        self._on_done = on_done
        self._scripted = scripted
        self._memory = memory
        self.progress = AnswerProgress()
        self.stage = Stage.LLM
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._held = held
        self._held_audio: list[bytes] = []
        self._spoken = bytearray()  # the answer's audio as sent to the caller (kept with the turn)
        self._held_seconds = 0.0
        self._cancelled = threading.Event()
        self._streams: list[object] = []
        self._reply: ActingReply | None = None
        context = contextvars.copy_context()  # the worker sees the turn's deadline
        self._thread = threading.Thread(target=context.run, args=(self._work,), daemon=True,
                                        name=f"voiceassist-answer-{name}")
        self._thread.start()

    # -- the conversation's side ----------------------------------------------------------------------
    @property
    def held(self) -> bool:
        with self._lock:
            return self._held

    def commit(self) -> None:
        """The caller has finished: what was prepared goes to the leg now, the rest as it comes."""
        with self._lock:
            if not self._held:
                return
            self._held = False
            audio, self._held_audio = self._held_audio, []
            seconds, self._held_seconds = self._held_seconds, 0.0
            if audio:
                self._to_leg(b"".join(audio), seconds)
        self._tell_reply()

    def cancel(self) -> None:
        """Stop: nothing more is queued; the model's and the voice's streams are closed."""
        self._cancelled.set()
        with self._lock:
            self._held_audio.clear()
            streams = list(self._streams)
        for stream in streams:
            try:
                _close(stream)
            except Exception:  # closing a stream another thread is reading may raise; it is over anyway
                pass

    @property
    def action(self) -> Action | None:
        """What the reply asked the call to do (a transfer, a message, the end), once it is known."""
        reply = self._reply
        return reply.action if reply is not None else None

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self, sentences: bool = True) -> AnswerProgress:
        """A copy of the progress; without ``sentences`` (what the conversation asks for every
        20 ms frame) the sentences are left out."""
        with self._lock:
            p = self.progress
            copied = [SpokenSentence(s.text, s.seconds) for s in p.sentences] if sentences else []
            return AnswerProgress(copied, p.queued_seconds, p.first_audio_at, p.finished, p.error, p.level_dbfs)

    def spoken_audio(self, seconds: float | None = None) -> bytes:
        """The answer's audio (16-bit PCM at the leg's rate), or its first ``seconds`` (what an
        interrupted caller heard)."""
        with self._lock:
            audio = bytes(self._spoken)
        if seconds is not None:
            audio = audio[:int(seconds * self.leg.sample_rate) * BYTES_PER_SAMPLE]
        return audio

    def _tell_reply(self) -> None:
        """The reply so far to whoever watches, once the answer is for the caller (not while it is
        prepared in a pause that may turn out not to be the end of the question)."""
        text = self.reply_text()
        if self._on_reply is not None and text and not self.held:
            self._on_reply(text)

    def reply_text(self) -> str:
        with self._lock:
            return " ".join(s.text for s in self.progress.sentences)

    def heard_text(self, played_seconds: float) -> str:
        """The words of the answer the caller heard in ``played_seconds`` of its audio: every
        sentence played whole, then the share of the next one's words that fits its played share."""
        heard: list[str] = []
        left = played_seconds
        with self._lock:
            sentences = list(self.progress.sentences)
        for sentence in sentences:
            if sentence.seconds <= 0:
                break
            if left >= sentence.seconds - 0.02:
                heard.append(sentence.text)
                left -= sentence.seconds
                continue
            words = sentence.text.split()
            share = int(len(words) * max(0.0, left) / sentence.seconds)
            if share:
                heard.append(" ".join(words[:share]) + " ...")
            break
        return " ".join(heard)

    # -- the worker ---------------------------------------------------------------------------------
    def _to_leg(self, pcm: bytes, seconds: float) -> None:
        """(Lock held.) Hand audio to the leg and count it."""
        self.leg.play(pcm)
        self.progress.queued_seconds += seconds
        if self.progress.first_audio_at is None:
            self.progress.first_audio_at = time.monotonic()
            self.record.timings["first_audio"] = int((self.progress.first_audio_at - self.started) * 1000)
            deadline.lift()  # the caller is about to hear something

    def _queue(self, pcm: bytes, sentence: SpokenSentence) -> None:
        seconds = len(pcm) / BYTES_PER_SAMPLE / self.leg.sample_rate
        level = level_dbfs(pcm)
        with self._lock:
            if self.progress.level_dbfs is None or level > self.progress.level_dbfs:
                self.progress.level_dbfs = level
            if self._cancelled.is_set():
                raise _Cancelled("the answer was cancelled")
            sentence.seconds += seconds
            if len(self._spoken) < MAX_KEPT_SECONDS * self.leg.sample_rate * BYTES_PER_SAMPLE:
                self._spoken += pcm
            if self._held:
                self._held_audio.append(pcm)
                self._held_seconds += seconds
            else:
                self._to_leg(pcm, seconds)

    def _track(self, stream: object) -> None:
        with self._lock:
            self._streams.append(stream)
        if self._cancelled.is_set():
            _close(stream)
            raise _Cancelled("the answer was cancelled")

    def _fallback(self, tag: str) -> Callable[[str, Exception], None]:
        def on_failure(name: str, exc: Exception) -> None:
            self.log(tag, f"{name} failed, trying the next provider: {exc}", logging.WARNING)
        return on_failure

    def _work(self) -> None:
        try:
            self._answer()
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the conversation, which decides what the caller hears
            with self._lock:
                self.progress.error = exc
        finally:
            with self._lock:
                self.progress.finished = True
            self._on_done()

    def _answer(self) -> None:
        history = self._history()
        if self._cancelled.is_set():
            return
        t0 = time.monotonic()
        pieces, self.record.llm_provider = open_reply(self.assistant, history, self.question, self._fallback("LLM"),
                                                      self._scripted, self._memory)
        self._reply = pieces
        self._track(pieces)
        self.record.timings["llm_first"] = int((time.monotonic() - t0) * 1000)
        splitter = SentenceSplitter()
        spoken = 0

        def sentences() -> Iterator[str]:
            for piece in pieces:
                if self._cancelled.is_set():
                    return
                yield from splitter.feed(piece)
            yield from splitter.finish()
            self.record.timings["llm"] = int((time.monotonic() - t0) * 1000)

        language = self.assistant.config.general.language
        for raw in sentences():
            sentence = speakable(raw, language=language)
            if not sentence:
                continue
            spoken += len(sentence) + 1
            if spoken > MAX_REPLY_CHARS:
                break
            self._speak(sentence)
        for note in pieces.notes:  # a tool that failed: the caller heard the apology
            self.record.error = (f"{self.record.error}; {note}" if self.record.error else note)[:2000]
            self.log("TOOL", note, logging.WARNING)
        if not self.progress.sentences:
            raise ProviderBadResponse(f"{self.record.llm_provider}: nothing sayable in the reply",
                                      provider=self.record.llm_provider or "llm")

    def _speak(self, text: str) -> None:
        self.stage = Stage.TTS
        audio = self.assistant.config.audio
        rate = self.leg.sample_rate
        spoken = SpokenSentence(text)
        t0 = time.monotonic()
        chunks, self.record.tts_provider = self.assistant.providers("tts").stream(
            lambda tts: _speech_chunks(tts, text), self._fallback("TTS"))
        self._track(chunks)
        with self._lock:
            self.progress.sentences.append(spoken)
        self._tell_reply()
        first = True
        converter = SpeechStream(rate, gain_db=audio.volume_gain_db, ffmpeg=audio.ffmpeg, timeout=audio.timeout)
        first_piece = int(FIRST_PIECE_SECONDS * rate) * BYTES_PER_SAMPLE
        waiting: list[bytes] = []
        for chunk in chunks:
            if first:
                self.record.timings.setdefault("tts", int((time.monotonic() - t0) * 1000))
                first = False
            pcm = converter.feed(chunk)
            if not pcm:
                continue
            if first_piece:
                waiting.append(pcm)
                if sum(map(len, waiting)) < first_piece:
                    continue
                pcm, waiting, first_piece = b"".join(waiting), [], 0
            self._queue(pcm, spoken)
        if tail := b"".join(waiting) + converter.finish():
            self._queue(tail, spoken)
        self.stage = Stage.LLM
