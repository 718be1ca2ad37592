"""Pipelined answers: play sentence 1 while sentence 2 is still being written and synthesized.

The chat model's reply streams in; a worker thread cuts it into sentences, synthesizes each one
to its own μ-law file and queues it; the AGI thread plays the queue with ``STREAM FILE``. The
caller hears the first sentence as soon as it exists instead of after the whole reply.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from . import deadline
from .errors import ProviderTimeout, TurnDeadlineExceeded
from .speakable import MAX_REPLY_CHARS, SentenceSplitter, speakable

if TYPE_CHECKING:
    from .flow import Turn

_DONE = object()
# How long to wait for a later sentence once the caller is already listening.
NEXT_SENTENCE_WAIT = 60.0


class SentencePipeline:
    """Runs the synthesizer thread for one turn; :meth:`play` plays what it produces."""

    def __init__(self, turn: Turn, pieces: Iterator[str], *, llm_started: float) -> None:
        self.turn = turn
        self.pieces = pieces
        self.llm_started = llm_started
        self.sentences: list[str] = []
        self.error: BaseException | None = None
        self.playing = False  # the caller has started hearing the answer
        self._files: list[Path] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        # A copy of the turn's context: the worker sees the turn's deadline.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._produce,), daemon=True,
                                        name=f"voiceassist-tts-{turn.call.uniqueid}")
        self._thread.start()

    @property
    def files(self) -> list[Path]:
        with self._lock:
            return list(self._files)

    def _sentences(self) -> Iterator[str]:
        splitter = SentenceSplitter()
        for piece in self.pieces:
            yield from splitter.feed(piece)
        yield from splitter.finish()
        self.turn.record.timings["llm"] = self.turn._elapsed_ms(self.llm_started)

    def _produce(self) -> None:
        try:
            spoken = 0
            for raw in self._sentences():
                sentence = speakable(raw)
                if not sentence:
                    continue
                spoken += len(sentence) + 1
                if spoken > MAX_REPLY_CHARS or self._cancelled.is_set():
                    break
                path = self.turn._answer_path(len(self.sentences) + 1)
                self.turn._synthesize(sentence, path)
                with self._lock:
                    if self._cancelled.is_set():
                        path.unlink(missing_ok=True)
                        break
                    self.sentences.append(sentence)
                    self._files.append(path)
                self._queue.put(path)
                deadline.lift()  # the caller is about to hear something
        except BaseException as exc:  # handed to the AGI thread, which decides what the caller hears
            self._queue.put(exc)
        finally:
            self._queue.put(_DONE)

    def play(self) -> list[Path]:
        """Play each sentence as it becomes ready; returns the files played.

        Raises:
            The synthesizer's error, or ``TurnDeadlineExceeded``, when nothing was played yet
            (the turn then plays the apology prompt). Later errors end the answer early and
            are kept in :attr:`error`.
            ``AGIHangup`` when the caller hangs up.
        """
        played: list[Path] = []
        while True:
            left = deadline.remaining() if not played else NEXT_SENTENCE_WAIT
            try:
                item = self._queue.get(timeout=None if left is None else max(left, 0.01))
            except queue.Empty:
                if not played:
                    raise TurnDeadlineExceeded("no answer audio within the turn's time budget "
                                               "([general] turn_deadline)") from None
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
            if not played:
                self.turn.mark_first_audio()
                # For the h extension: a hang-up from now on is "during the answer", as in file mode.
                self.turn.session.set_variable("VA_STATE", "answering")
                self.playing = True
            self.turn.session.raise_if_hung_up()
            self.turn.session.stream_file(str(item.with_suffix("")))
            played.append(item)
        return played

    def stop(self) -> None:
        """Tell the synthesizer to stop after the sentence it is on (a hang-up, an error)."""
        self._cancelled.set()
