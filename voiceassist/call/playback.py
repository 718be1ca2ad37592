"""Pipelined answers: play sentence 1 while sentence 2 is still being written and synthesized.

A worker thread opens the chat model's streamed reply, cuts it into sentences, synthesizes each
one to its own μ-law file and queues it; the call's thread plays the queue. The caller hears the
first sentence as soon as it exists instead of after the whole reply.

While it waits (for the model's first words, for the next sentence) the call's thread keeps asking
whether the caller is still there: a caller who hangs up while the model thinks ends the answer at
once, and no sentence is synthesized after that is known.

The pipeline knows nothing of the channel or of the turn: it is given what to call.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import deadline
from ..errors import CallerHungUp, ProviderTimeout, TurnDeadlineExceeded
from ..text.speakable import MAX_REPLY_CHARS, SentenceSplitter, speakable
from ..types import Stage

_DONE = object()
# How long to wait for a later sentence once the caller is already listening.
NEXT_SENTENCE_WAIT = 60.0
# How often the call's thread asks whether the caller is still there while it waits.
HANGUP_POLL = 0.1

OpenReply = Callable[[], Iterator[str]]
Synthesize = Callable[[str, int], Path]


class SentencePipeline:
    """Runs the worker for one answer; :meth:`play` plays what it produces.

    Args:
        open_reply: opens the model's reply (blocking until its first words) and returns its
            pieces; called in the worker thread.
        synthesize: ``synthesize(sentence, number)`` writes sentence ``number`` (from 1) as phone
            audio and returns its file; called in the worker thread.
        on_reply_done: called in the worker when the whole reply has been read.
        name: names the worker thread (the call's uniqueid).
    """

    def __init__(self, open_reply: OpenReply, synthesize: Synthesize, *,
                 on_reply_done: Callable[[], None] = lambda: None, name: str = "", language: str = "en") -> None:
        self._open_reply = open_reply
        self._language = language
        self._synthesize = synthesize
        self._on_reply_done = on_reply_done
        self.sentences: list[str] = []
        self.error: BaseException | None = None
        self.playing = False  # the caller has started hearing the answer
        self.key = ""         # the key that stopped the answer ("": none)
        self.stage = Stage.LLM  # what the worker is waiting on: the model's reply or its speech
        self._files: list[Path] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        # A copy of the call's context: the worker sees the turn's deadline.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._produce,), daemon=True,
                                        name=f"voiceassist-tts-{name}")
        self._thread.start()

    @property
    def files(self) -> list[Path]:
        with self._lock:
            return list(self._files)

    def _sentences(self) -> Iterator[str]:
        pieces = self._open_reply()
        splitter = SentenceSplitter()
        try:
            for piece in pieces:
                if self._cancelled.is_set():
                    return
                yield from splitter.feed(piece)
            yield from splitter.finish()
            self._on_reply_done()
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # a cancelled answer stops reading the model's stream

    def _produce(self) -> None:
        try:
            spoken = 0
            for raw in self._sentences():
                sentence = speakable(raw, language=self._language)
                if not sentence:
                    continue
                spoken += len(sentence) + 1
                if spoken > MAX_REPLY_CHARS or self._cancelled.is_set():
                    break
                self.stage = Stage.TTS
                path = self._synthesize(sentence, len(self.sentences) + 1)
                with self._lock:
                    if self._cancelled.is_set():
                        path.unlink(missing_ok=True)
                        break
                    self.sentences.append(sentence)
                    self._files.append(path)
                self._queue.put(path)
                deadline.lift()  # the caller is about to hear something
                self.stage = Stage.LLM
        except BaseException as exc:  # handed to the call's thread, which decides what the caller hears
            self._queue.put(exc)
        finally:
            self._queue.put(_DONE)

    def _next(self, hung_up: Callable[[], bool], first: bool) -> object:
        """The next item, waiting at most the turn's deadline (first) or NEXT_SENTENCE_WAIT,
        and asking ``hung_up()`` every HANGUP_POLL seconds meanwhile."""
        left = deadline.remaining() if first else NEXT_SENTENCE_WAIT
        until = None if left is None else time.monotonic() + max(left, 0.01)
        while True:
            wait = HANGUP_POLL if until is None else min(HANGUP_POLL, until - time.monotonic())
            try:
                return self._queue.get(timeout=max(wait, 0.001))
            except queue.Empty:
                pass
            if hung_up():
                self.stop()
                raise CallerHungUp("the caller hung up while the answer was being prepared")
            if until is not None and time.monotonic() >= until:
                if first:
                    raise TurnDeadlineExceeded("no answer audio within the turn's time budget "
                                               "([general] turn_deadline)") from None
                raise queue.Empty

    def play(self, play_file: Callable[[Path], str], hung_up: Callable[[], bool],
             on_first_audio: Callable[[], None] = lambda: None) -> list[Path]:
        """Play each sentence as it becomes ready; returns the files played.

        ``play_file`` plays one (blocking) and returns the key the caller pressed to stop it ("":
        none; the rest of the answer is then not played, the key is kept in :attr:`key`), ``hung_up`` says whether the caller is gone (asked
        while waiting and before each sentence), ``on_first_audio`` runs once, just before the
        first sentence is played.

        Raises:
            The worker's error, or ``TurnDeadlineExceeded``, when nothing was played yet (the turn
            then plays the apology prompt). Later errors end the answer early and are kept in
            :attr:`error`.
            ``CallerHungUp`` when the caller hangs up.
        """
        played: list[Path] = []
        while True:
            try:
                item = self._next(hung_up, first=not played)
            except queue.Empty:
                self.error = ProviderTimeout(f"the next sentence was not ready within {NEXT_SENTENCE_WAIT:.0f} s")
                break
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                if not played:
                    raise item
                self.error = item
                break
            assert isinstance(item, Path)
            if hung_up():
                self.stop()
                raise CallerHungUp("the caller hung up before the answer started")
            if not played:
                on_first_audio()
                self.playing = True
            key = play_file(item)
            played.append(item)
            if key:
                self.key = key
                self.stop()
                break
        return played

    def stop(self) -> None:
        """Tell the worker to stop after the sentence it is on (a hang-up, an error)."""
        self._cancelled.set()
