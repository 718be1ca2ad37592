"""The real-time conversation: the caller talks, the assistant answers while it listens, and the
caller can interrupt it.

One :class:`LiveConversation` per call runs on its own thread over a :class:`~.media.MediaLeg`
(AudioSocket or Asterisk's WebSocket channel: the conversation cannot tell which). Every 20 ms
frame of the caller's audio goes through the voice activity detector once:

* listening, a :class:`~voiceassist.audio.endpointing.SpeechTracker` finds where the caller
  starts and stops (``[live] end_silence_ms``); what they say goes to the recogniser as it is said
  (:mod:`.listening`), and its final words may start the answer *held* (:mod:`.speaking`) before
  the end silence is over: the answer is released when the caller has really finished, cancelled
  unheard if they go on;
* while the assistant speaks, a :class:`~voiceassist.audio.endpointing.VoiceOnset` decides
  whether the caller is really talking (barge-in): the leg stops playing at once, the answer's
  work is cancelled, the turn is stored as interrupted with what the caller heard of it, and the
  caller's words become the next question.

Nobody waits in silence: "one moment" plays when an answer is slow (``filler_after``), a silent
caller is asked whether they are still there and then told goodbye, ``#`` ends the call politely,
and a provider failure is an apology, after which the caller may ask again. Each exchange is a
stored turn as in the AGI flow (same journal, same spool), written in order by a writer thread so
that a slow database never delays the conversation; the model's history is what the caller heard.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..audio.endpointing import BargeIn, LiveListening, SpeechTracker, VoiceDetector, VoiceOnset, level_dbfs, webrtc_detector
from ..audio.prompts import PromptSounds
from ..audio.recording import write_wav
from ..config import Live
from ..deadline import turn_deadline
from ..errors import AudioError, ProviderError, RequestError
from ..logs import logger
from ..types import CallInfo, Exchange, Stage, ToolCall, TurnRecord, TurnStatus
from .actions import TRANSFER, Action, ActionKind
from .keys import KeyAction, key_map
from .assistant import Assistant
from .call_events import CallerLookup, LiveWords, announce
from .channel import CallLog
from .listening import Heard, Utterance
from .media import FRAME_SECONDS, MediaEventKind, MediaLeg
from .records import store_turn
from .requests import call_directory
from .speaking import SpokenAnswer
from .summary import recall

# Audio kept from before the caller counted as talking, so their first syllable reaches the recogniser.
PRE_ROLL_SECONDS = 0.4
# After the assistant stops, its echo may linger this long: only a loud voice starts an utterance then.
ECHO_TAIL_SECONDS = 0.25
# The recogniser's final words start a held answer once the caller has been quiet this long.
PREPARE_AFTER_MS = 100
# A line that sends no frames while the caller is quiet (a phone with silence suppression, a
# Local channel) must still end an utterance: after this long without a frame, the missing time
# counts as silence.
NO_FRAMES_GAP_SECONDS = 0.1
# Failed turns in a row after which the call ends politely instead of asking again.
MAX_FAILURES_IN_A_ROW = 2
# How long a goodbye may take to play before the leg is closed anyway (beyond its own length).
GOODBYE_GRACE_SECONDS = 2.0
# Beyond max_call_seconds by this much, an answer in progress is cut for the goodbye.
HARD_LIMIT_GRACE_SECONDS = 30.0
MIN_STORED_UTTERANCE_SECONDS = 0.3


class EndReason(enum.StrEnum):
    """Why a live call ended (the dialplan's ``VA_LIVE_END``)."""

    HANGUP = "hangup"        # the caller hung up (or Asterisk closed the media connection)
    CALLER_ENDED = "ended"   # the caller pressed #
    SILENCE = "silence"      # nobody spoke after "are you still there?"
    LIMIT = "limit"          # [live] max_call_seconds
    FAILED = "failed"        # the providers failed MAX_FAILURES_IN_A_ROW times
    TRANSFER = "transfer"    # the assistant transfers the caller (the dialplan does it: VA_ACTION)
    MESSAGE = "message"      # the caller leaves a message (the dialplan records it)
    DONE = "done"            # the assistant ended the call when the caller was done


# The end of a conversation each action asks for.
ACTION_ENDS = {ActionKind.TRANSFER: EndReason.TRANSFER, ActionKind.MESSAGE: EndReason.MESSAGE,
               ActionKind.END_CALL: EndReason.DONE}


@dataclass
class LiveOutcome:
    reason: EndReason
    turns: int = 0
    transcript: str = ""
    reply: str = ""
    # What the dialplan does next (a transfer, a message); None: nothing.
    action: Action | None = None


@dataclass(frozen=True)
class TakeOver:
    """What a conversation engine that failed leaves the cascade: the call so far, what is known of
    the caller, and the question it did not answer (empty: none). The call has been announced
    (``call.started``) and greeted."""

    engine: str
    history: tuple[Exchange, ...] = ()
    memory: str = ""
    question: str = ""
    # The caller's audio of that question when the engine never said what it heard (PCM at the
    # leg's rate): the cascade's recogniser hears it instead.
    audio: bytes = b""
    started: float = 0.0          # time.monotonic() the call began ([live] max_call_seconds counts from it)
    say_one_moment: bool = True   # False: the engine never spoke (the greeting has played)


@dataclass(frozen=True)
class LiveSettings:
    """The ``[live]`` settings a conversation uses, in the audio layer's terms."""

    listening: LiveListening = field(default_factory=LiveListening)
    barge_in: BargeIn = field(default_factory=BargeIn)
    filler_after: float = 1.5
    still_there_after: float = 8.0
    goodbye_after: float = 6.0
    max_call_seconds: float = 600.0

    @classmethod
    def from_config(cls, live: Live) -> LiveSettings:
        return cls(
            listening=LiveListening(end_ms=live.end_silence_ms, max_s=live.max_utterance_seconds),
            barge_in=BargeIn(enabled=live.barge_in, min_voiced_ms=live.barge_in_ms,
                             window_ms=live.barge_in_ms + 100, min_level_dbfs=live.barge_in_level_dbfs),
            filler_after=live.filler_after, still_there_after=live.still_there_after,
            goodbye_after=live.goodbye_after, max_call_seconds=live.max_call_seconds)


@dataclass
class _Answering:
    """The answer in progress and its turn."""

    answer: SpokenAnswer
    record: TurnRecord
    heard: Heard | None            # None while held (the caller may not have finished)
    speech_started: float          # time.monotonic() the caller started the question
    speech_ended: float | None = None
    end_mark: str = ""             # queued once the worker has finished
    filler_played: bool = False


@dataclass(frozen=True)
class TurnAudio:
    """A turn's audio to keep ([general] keep_recordings): the question and the answer as heard."""

    question: bytes
    answer: bytes
    rate: int


class TurnWriter:
    """Stores turns in order on a thread of its own (a database timing out must not hold the call);
    their audio is written there too, as WAV files in the call's directory."""

    def __init__(self, assistant: Assistant, call: CallInfo, log: CallLog) -> None:
        self._queue: queue.Queue[tuple[TurnRecord, TurnAudio | None] | None] = queue.Queue()
        self._assistant, self._call, self._log = assistant, call, log
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"voiceassist-store-{call.uniqueid}")
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            record, audio = item
            if audio is not None:
                self._keep(record, audio)
            store_turn(self._assistant, self._call, record, self._log)

    def _keep(self, record: TurnRecord, audio: TurnAudio) -> None:
        try:
            directory = _audio_directory(self._assistant.config.general.answer_dir, self._call.uniqueid)
            if audio.question:
                record.recording_path = str(write_wav(directory, f"question-{record.turn_number}.wav",
                                                      audio.question, audio.rate))
            if audio.answer:
                record.answer_path = str(write_wav(directory, f"answer-{record.turn_number}.wav",
                                                   audio.answer, audio.rate))
        except Exception as exc:  # the turn is stored without its audio, never lost for it
            self._log("AUDIO", f"turn {record.turn_number}'s audio not kept: {exc}", logging.WARNING)

    def add(self, record: TurnRecord, audio: TurnAudio | None = None) -> None:
        self._queue.put((record, audio))

    def close(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the turns still to be written."""
        self._queue.put(None)
        self._thread.join(timeout)


def _audio_directory(answer_dir: str, uniqueid: str) -> Path:
    """Where a call's kept audio goes: ``<answer_dir>/<uniqueid>`` for an Asterisk call, a safe
    name for any other (an ai-server session's id): never a path outside the answer directory."""
    try:
        return call_directory(answer_dir, uniqueid)
    except RequestError:
        name = re.sub(r"[^0-9A-Za-z_-]", "_", uniqueid)[:64] or "call"
        return Path(os.path.realpath(answer_dir)) / name


class LiveConversation:
    """One live call (see the module's docstring). :meth:`run` returns when the call is over and
    the leg is closed; it never raises."""

    def __init__(self, leg: MediaLeg, assistant: Assistant, call: CallInfo, prompts: PromptSounds, *,
                 settings: LiveSettings | None = None, detector: VoiceDetector | None = None,
                 turns_before: int = 0, taking_over: TakeOver | None = None,
                 on_turn: Callable[[TurnRecord], None] | None = None) -> None:
        self.leg = leg
        self.assistant = assistant
        self.call = call
        self.prompts = prompts
        self.settings = settings or LiveSettings.from_config(assistant.config.live)
        self.log = CallLog(None, call.uniqueid)
        self.rate = leg.sample_rate
        self._detector = detector or webrtc_detector(2, self.rate)
        self.tracker = SpeechTracker(self._detector, self.settings.listening)
        self.onset = VoiceOnset(self._detector, self.settings.barge_in)
        self.exchanges: list[Exchange] = []
        self.turns = turns_before  # a call resumed after a transfer nobody answered numbers on
        self.words = LiveWords(assistant, call)  # the console's live view
        self.failures = 0
        self.digits: list[str] = []
        self._keys = key_map(assistant.config)
        self._memory = ""  # what the caller's earlier calls were about, read when the call starts
        self.started = time.monotonic()
        self._last_frame_at = time.monotonic()
        self._pre_roll: deque[bytes] = deque(maxlen=max(1, int(PRE_ROLL_SECONDS / FRAME_SECONDS)))
        self._utterance: Utterance | None = None
        self._utterance_started = 0.0
        self._pending: tuple[Utterance, float] | None = None  # finished, its words not yet in
        self._answering: _Answering | None = None
        self._prompt_mark = ""          # the mark at the end of the prompt playing
        self._prompt_until = 0.0
        self._prompt_level = -100.0
        self._audible_until = 0.0       # when the assistant's last audio ended (echo tail from there)
        self._quiet_since = self.started
        self._asked_still_there = False
        self._ending: EndReason | None = None
        self._ending_until = 0.0
        self._closed = False
        self._marks = 0
        self._writer = TurnWriter(assistant, call, self.log)
        self._last = LiveOutcome(EndReason.HANGUP)
        self._taking_over = taking_over
        self._on_turn = on_turn  # told each turn as it is stored (the AI server's transcripts)
        if taking_over is not None and taking_over.started:
            self.started = taking_over.started
        if taking_over is not None:
            self.exchanges = list(taking_over.history)
            self._memory = taking_over.memory

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> LiveOutcome:
        self.log("LIVE", f"conversation started over {type(self.leg).__name__} at {self.rate} Hz")
        reason = EndReason.HANGUP
        taking_over = self._taking_over
        if self.turns == 0 and taking_over is None:
            announce(self.assistant, "call.started", self.call)
        try:
            if taking_over is not None:
                self._take_over(taking_over)
            else:
                lookup = CallerLookup(self.assistant, self.call)
                self._play_prompt("live-greeting")
                # While the greeting plays: what is known about the caller (the lookup waits at
                # most [webhooks] lookup_timeout).
                self._memory = "\n\n".join(part for part in (lookup.text(), recall(self.assistant, self.call, self.log))
                                             if part)
            reason = self._loop()
        except Exception:  # a bug: the caller gets a goodbye, not a dead line
            logger.exception("[LIVE] %s unexpected error", self.call.uniqueid)
            reason = EndReason.FAILED
        finally:
            self._finish(reason)
        self._last.reason = reason
        self._last.turns = self.turns
        return self._last

    def _take_over(self, taking_over: TakeOver) -> None:
        """Go on from a conversation engine that failed: "one moment", then the caller's question
        it left unanswered, if any, is answered here."""
        if taking_over.say_one_moment:
            self._play_prompt("one-moment")
        now = time.monotonic()
        if taking_over.question:
            answering = self._start_answer(taking_over.question, None, now, held=False)
            answering.heard = Heard(taking_over.question, None, taking_over.engine, b"", now)
            answering.speech_ended = now
            answering.record.transcript = taking_over.question
            answering.record.stt_provider = taking_over.engine
        elif taking_over.audio:
            utterance = Utterance(self.assistant, self.rate, self.log, before=taking_over.audio)
            self._utterance_started = now - utterance.seconds
            utterance.finish()
            self._await_words(utterance, now)

    def _loop(self) -> EndReason:
        while True:
            event = self.leg.next_event(FRAME_SECONDS * 2)
            now = time.monotonic()
            # Gaps are judged by when frames arrived, not when this thread got to them: a busy
            # moment here must not turn the caller's queued words into made-up pauses.
            arrived = (event.at or now) if event is not None else now
            if event is None or event.kind is MediaEventKind.AUDIO:
                self._fill_silence(arrived, arriving=event is not None)
            if event is not None:
                if event.kind is MediaEventKind.CLOSED:
                    self._closed = True
                    self._caller_gone()
                    return self._ending or EndReason.HANGUP
                if event.kind is MediaEventKind.AUDIO:
                    self._on_audio(event.audio, now)
                    self._last_frame_at = max(self._last_frame_at, arrived)
                elif event.kind is MediaEventKind.MARK:
                    self._on_mark(event.mark, now)
                elif event.kind is MediaEventKind.DTMF:
                    self._on_digit(event.digit)
                elif event.kind is MediaEventKind.TEXT and self._ending is None:
                    self._answer_text(event.text, "text", now)
            if self._ending is not None:
                if not self._prompt_mark or now >= self._ending_until:
                    return self._ending
                continue
            self._tick(now)

    # -- the caller's audio ---------------------------------------------------------------------------
    def _fill_silence(self, now: float, arriving: bool) -> None:
        """Frames that did not come (silence suppression) are fed as silence, so the end of an
        utterance is found on the clock even when the line goes quiet. ``arriving``: a frame has
        just come (it fills the last 20 ms of the gap itself)."""
        missing = now - self._last_frame_at
        if missing < NO_FRAMES_GAP_SECONDS:
            return
        if not arriving and self.leg.audio_waiting():
            # Not a quiet line: the frames are on their way (stamped when they came in, taken in
            # by a thread that has not had its turn yet under load); silence made up for them
            # would push the caller's real words later.
            return
        frames = int(missing / FRAME_SECONDS) - (1 if arriving else 0)
        silence = bytes(2 * int(self.rate * FRAME_SECONDS))
        for _ in range(frames):
            self._on_audio(silence, now)
        self._last_frame_at = max(self._last_frame_at, now)

    def _assistant_audible(self, now: float) -> bool:
        if self._prompt_mark:
            return True
        answering = self._answering
        return bool(answering and answering.heard is not None and not answering.answer.held
                    and answering.answer.snapshot(sentences=False).first_audio_at is not None)

    def _playing_level(self) -> float | None:
        """The level of what the assistant plays now (a prompt's, or the answer's loudest)."""
        levels = [self._prompt_level] if self._prompt_mark else []
        answering = self._answering
        if answering is not None and (level := answering.answer.snapshot(sentences=False).level_dbfs) is not None:
            levels.append(level)
        return max(levels) if levels else None

    def _on_audio(self, frame: bytes, now: float) -> None:
        if self._ending is not None:
            return
        speech, level = self._detector.is_speech(frame), level_dbfs(frame)
        edge = self.tracker.feed_verdict(speech, level)
        self._pre_roll.append(frame)
        if speech and level >= self.settings.listening.min_level_dbfs:
            self._quiet_since = now
            self._asked_still_there = False
        if self._utterance is not None:
            self._utterance.feed(frame)
            if edge == "end":
                self._caller_finished(now)
            return
        if self._assistant_audible(now) or now - self._audible_until < ECHO_TAIL_SECONDS:
            # The assistant is talking (or its echo may still be on the line): only a real
            # interruption counts, never the tracker's quieter start.
            if self.onset.feed_verdict(speech, level, self._playing_level()):
                self._barge_in(now)
            return
        self.onset.reset()
        if edge == "start":
            self._caller_started(now)

    def _caller_started(self, now: float, said_before: str = "") -> None:
        answering = self._answering
        if answering is not None and answering.answer.snapshot(sentences=False).first_audio_at is None:
            # The caller goes on (or adds to the question) before any of the answer was heard:
            # the answer being prepared is dropped, their words so far lead the new question.
            said_before = answering.answer.question
            self._drop_answer()
        before = b"".join(self._pre_roll)
        self._pre_roll.clear()
        self._utterance = Utterance(self.assistant, self.rate, self.log, before=before, said_before=said_before,
                                    on_words=lambda text, final: self.words.caller(self.turns + 1, text, final))
        self._utterance_started = now - len(before) / 2 / self.rate

    def _caller_finished(self, now: float) -> None:
        utterance = self._utterance
        assert utterance is not None
        speech_ended = now - self.tracker.silent_ms() / 1000
        utterance.finish()
        self._utterance = None
        self._await_words(utterance, speech_ended)

    def _await_words(self, utterance: Utterance, speech_ended: float) -> None:
        """The words of a finished utterance (a streaming recogniser has them within a few
        hundred ms; batch transcription takes its time, while the loop keeps running)."""
        self._pending = (utterance, speech_ended)

    # -- time passing ---------------------------------------------------------------------------------
    def _tick(self, now: float) -> None:
        if self._prompt_mark and now > self._prompt_until:
            self._prompt_ended(now)  # a transport that lost the mark must not keep us "speaking"
        if self._utterance is not None:
            self._maybe_prepare(self._utterance)
        if self._pending is not None and self._pending[0].done.is_set():
            utterance, speech_ended = self._pending
            self._pending = None
            self._words_in(utterance, speech_ended, now)
        if self._answering is not None:
            self._follow_answer(self._answering, now)
        elif self._utterance is None and self._pending is None and not self._prompt_mark:
            self._watch_silence(now)
        if now - self.started >= self.settings.max_call_seconds and self._ending is None:
            busy = self._answering is not None or self._utterance is not None or self._pending is not None
            if not busy or now - self.started >= self.settings.max_call_seconds + HARD_LIMIT_GRACE_SECONDS:
                self.log("LIVE", f"call limit of {self.settings.max_call_seconds:g} s reached")
                self._goodbye(EndReason.LIMIT, now)

    def _maybe_prepare(self, utterance: Utterance) -> None:
        """The recogniser's final words and a pause: prepare the answer, held."""
        if not utterance.words_changed.is_set() or self.tracker.silent_ms() < PREPARE_AFTER_MS:
            return
        utterance.words_changed.clear()
        words = utterance.words_so_far()
        if not words:
            return
        if self._answering is not None:
            if self._answering.answer.question == words:
                return
            self._drop_answer()
        self._start_answer(words, None, self._utterance_started, held=True)

    def _words_in(self, utterance: Utterance, speech_ended: float, now: float) -> None:
        heard = utterance.result()
        answering = self._answering
        if not heard.text:
            if answering is not None and answering.answer.held:
                self._drop_answer()
            if heard.error is not None:
                self._failed_turn(TurnStatus.STT_ERROR, Stage.STT, heard.error, heard, utterance, speech_ended, now)
            else:
                self.log("STT", f"no words in {utterance.seconds:.1f} s of sound (a noise?); listening on")
            return
        self.words.caller(self.turns + 1, heard.text, final=True)  # before the reply a held answer shows on commit
        if answering is not None and answering.answer.held and answering.answer.question == heard.text:
            answering.answer.commit()
        else:
            if answering is not None:
                self._drop_answer()
            answering = self._start_answer(heard.text, heard, self._utterance_started, held=False)
        answering.heard = heard
        answering.speech_ended = speech_ended
        answering.answer.commit()
        record = answering.record
        record.transcript = heard.text
        record.stt_provider = heard.provider
        record.stt_confidence = heard.confidence
        record.timings["recording"] = int(utterance.seconds * 1000)
        record.timings["stt"] = max(0, int((heard.final_at - speech_ended) * 1000))
        self.log("STT", f"{len(heard.text)} chars by {heard.provider}, final {record.timings['stt']} ms after "
                        f"the caller stopped")

    def _start_answer(self, question: str, heard: Heard | None, speech_started: float, *, held: bool,
                      scripted: str | ToolCall | None = None) -> _Answering:
        record = TurnRecord(turn_number=self.turns + 1)
        history = list(self.exchanges)
        # The worker runs in a copy of this context: [general] turn_deadline bounds the wait for the
        # first audio (then the filler and the apology keep the line alive), as in the AGI flow.
        with turn_deadline(self.assistant.config.general.turn_deadline):
            answer = SpokenAnswer(self.assistant, self.leg, question, record, self.log, history=lambda: history,
                                  held=held, name=self.call.uniqueid, scripted=scripted, memory=self._memory,
                                  on_reply=lambda text: self.words.reply(record.turn_number, text))
        self._answering = _Answering(answer, record, heard, speech_started)
        return self._answering

    def _drop_answer(self) -> None:
        """An answer nobody heard (the caller went on talking): cancelled, not stored."""
        if self._answering is not None:
            self._answering.answer.cancel()
            self._answering = None

    def _follow_answer(self, answering: _Answering, now: float) -> None:
        if answering.heard is None:
            return  # held: the caller has not finished
        progress = answering.answer.snapshot(sentences=False)
        ended = answering.speech_ended or now
        if (progress.first_audio_at is None and not answering.filler_played and self.settings.filler_after > 0
                and now - ended >= self.settings.filler_after and not progress.finished):
            answering.filler_played = True
            self._play_prompt("one-moment")
        if progress.finished and not answering.end_mark:
            if progress.first_audio_at is None:
                error = progress.error or ProviderError("no answer")
                stage = answering.answer.stage
                status = TurnStatus.LLM_ERROR if stage is Stage.LLM else TurnStatus.TTS_ERROR
                if not isinstance(error, ProviderError | AudioError):
                    status = TurnStatus.ERROR
                self._answering = None
                self._failed_turn(status, stage, error, answering.heard, None, ended, now, record=answering.record)
                return
            self._marks += 1
            answering.end_mark = f"answer-{answering.record.turn_number}-{self._marks}"
            self.leg.mark(answering.end_mark)

    def _answer_played(self, answering: _Answering, now: float) -> None:
        progress = answering.answer.snapshot()
        record = answering.record
        if progress.error is not None:
            note = f"answer cut short after {len(progress.sentences)} sentences: {progress.error}"
            record.error = note[:2000]
            self.log("TTS", note, logging.WARNING)
        self._store_answered(answering, progress.queued_seconds, interrupted=False, now=now)
        self._answering = None
        self._audible_until = now
        self._quiet_since = now
        action = answering.answer.action
        if action is not None and action.ends_conversation and self._ending is None:
            # "Transferring you to sales." has been heard: the dialplan takes the call from here.
            self._last.action = action
            self._ending = ACTION_ENDS[action.kind]
            self._ending_until = now

    def _store_answered(self, answering: _Answering, played: float, *, interrupted: bool, now: float) -> None:
        record = answering.record
        answer = answering.answer
        record.reply = answer.reply_text() or None
        record.status = TurnStatus.OK
        if (action := answer.action) is not None and not interrupted:  # interrupted: the caller changed course
            record.action, record.action_target = action.kind.value, action.stored_target()
        record.interrupted = interrupted
        heard_text = answer.heard_text(played) if interrupted else (record.reply or "")
        record.heard_reply = heard_text if interrupted else None
        record.timings["played"] = int(played * 1000)
        progress = answer.snapshot()
        if progress.first_audio_at is not None and answering.speech_ended is not None:
            record.timings["speech_to_audio"] = max(0, int((progress.first_audio_at - answering.speech_ended) * 1000))
        record.timings["total"] = int((now - answering.speech_started) * 1000)
        audio = None
        if self.assistant.config.general.keep_recordings:
            audio = TurnAudio(answering.heard.audio if answering.heard is not None else b"",
                              answer.spoken_audio(played), self.rate)
        self._store(record, audio)
        self.exchanges.append(Exchange(record.transcript or "", heard_text))
        self.failures = 0
        self._last.transcript, self._last.reply = record.transcript or "", record.reply or ""
        self.log("LIVE", f"turn {record.turn_number}: {'interrupted after' if interrupted else 'played'} "
                         f"{played:.1f} s; end of speech to first audio {record.timings.get('speech_to_audio')} ms")

    def _store(self, record: TurnRecord, audio: TurnAudio | None = None) -> None:
        self.turns = max(self.turns, record.turn_number)
        self._writer.add(record, audio)
        if self._on_turn is not None:
            self._on_turn(record)

    def _failed_turn(self, status: TurnStatus, stage: Stage, error: BaseException, heard: Heard | None,
                     utterance: Utterance | None, speech_ended: float, now: float,
                     record: TurnRecord | None = None) -> None:
        record = record or TurnRecord(turn_number=self.turns + 1)
        record.status = status
        record.error = f"{type(error).__name__}: {error}"[:2000]
        if heard is not None:
            record.transcript = heard.text or None
        if utterance is not None:
            record.timings["recording"] = int(utterance.seconds * 1000)
        record.timings["total"] = int((now - speech_ended) * 1000)
        self.log(stage.upper(), f"failed: {record.error}", logging.ERROR)
        self._store(record)
        self.failures += 1
        if self.failures >= MAX_FAILURES_IN_A_ROW:
            self._play_prompt("cant-answer", mark=False)
            self._goodbye(EndReason.FAILED, now)
        else:
            self._play_prompt("live-anything-else" if stage is Stage.STT else "cant-answer")

    # -- barge-in -------------------------------------------------------------------------------------
    def _barge_in(self, now: float) -> None:
        answering = self._answering
        speaking = answering is not None and answering.answer.snapshot(sentences=False).first_audio_at is not None
        if answering is not None and speaking:
            answering.answer.cancel()  # first: once it returns, the worker queues nothing more
        unsent = self.leg.queued_seconds()
        self.leg.stop_playing()
        if answering is not None and not speaking:
            self.log("LIVE", "the caller spoke over 'one moment': their words join the question")
        elif answering is not None:
            progress = answering.answer.snapshot()
            played = max(0.0, progress.queued_seconds - unsent)
            self._answering = None
            self._store_answered(answering, played, interrupted=True, now=now)
            self.log("LIVE", f"barge-in: the caller spoke {played:.1f} s into the answer")
        else:
            self.log("LIVE", "barge-in: the caller spoke over the prompt")
        self._prompt_mark = ""
        self._audible_until = now
        self.onset.reset()
        self.tracker.start_now(len(self._pre_roll))
        self._caller_started(now)

    # -- prompts, marks and digits --------------------------------------------------------------------
    def _play_prompt(self, name: str, *, mark: bool = True) -> float:
        """Queue prompt ``name``; with ``mark``, the assistant counts as speaking until it has played."""
        try:
            pcm = self.prompts.pcm(name, self.rate)
        except AudioError as exc:
            self.log("LIVE", f"prompt {name} unavailable: {exc}", logging.ERROR)
            return 0.0
        self.leg.play(pcm)
        seconds = len(pcm) / 2 / self.rate
        if mark:
            self._prompt_level = level_dbfs(pcm)
            self._marks += 1
            self._prompt_mark = f"prompt-{name}-{self._marks}"
            self._prompt_until = time.monotonic() + self.leg.queued_seconds() + 1.0
            self.leg.mark(self._prompt_mark)
        return seconds

    def _prompt_ended(self, now: float) -> None:
        self._prompt_mark = ""
        self._audible_until = now
        self._quiet_since = now
        self.onset.reset()

    def _on_mark(self, name: str, now: float) -> None:
        if name and name == self._prompt_mark:
            self._prompt_ended(now)
        elif self._answering is not None and name == self._answering.end_mark:
            self._answer_played(self._answering, now)

    def _on_digit(self, digit: str) -> None:
        """A key ([actions] key_*): skip the rest of the answer (with nothing playing: end the call
        politely), hear the last answer again, or be transferred to the operator."""
        self.digits.append(digit)
        now = time.monotonic()
        what = self._keys.get(digit)
        self.log("LIVE", f"key {digit!r} pressed: {what or 'nothing to do'}")
        if self._ending is not None:
            return
        if what is None:
            if self.assistant.config.actions.keys_to_model and digit in "0123456789*#":
                self._told_to_model(digit, now)
            return
        answering = self._answering
        answer_playing = bool(answering and answering.heard is not None and not answering.answer.held
                              and answering.answer.snapshot(sentences=False).first_audio_at is not None)
        if what is KeyAction.SKIP:
            if answer_playing:  # the rest of the answer is left out; the turn is kept as interrupted
                self._interrupt_for_goodbye(now)
            elif self._prompt_mark:  # a prompt ("one moment"): it stops, an answer being prepared goes on
                self.leg.stop_playing()
            else:
                self._interrupt_for_goodbye(now)
                self._goodbye(EndReason.CALLER_ENDED, now)
                return
            self._prompt_ended(now)
            return
        scripted: str | ToolCall
        if what is KeyAction.REPEAT:
            if not self.exchanges or not self.exchanges[-1].answer:
                return
            scripted = self.exchanges[-1].answer
        else:
            scripted = ToolCall(TRANSFER, {"destination": self.assistant.config.actions.operator})
        self._interrupt_for_goodbye(now)
        self._prompt_mark = ""
        if self._utterance is not None:  # the key says what the caller wants: their words so far are dropped
            self._utterance.cancel()
            self._utterance = None
        self._pending = None
        pressed = f"[key {digit}]"
        answering = self._start_answer(pressed, None, now, held=False, scripted=scripted)
        answering.heard = Heard(pressed, None, "keys", b"", now)
        answering.speech_ended = now
        answering.record.transcript = pressed

    def _told_to_model(self, digit: str, now: float) -> None:
        """A key the model is told about, as a question of its own ([actions] keys_to_model)."""
        self._answer_text(f"(The caller pressed {digit} on the phone's keypad.)", "keys", now)

    def _answer_text(self, text: str, source: str, now: float) -> None:
        """Words that were not spoken (a key, a connector's typed text), answered as a question of
        their own: what is playing stops, and ``source`` is stored as who "heard" them."""
        self._interrupt_for_goodbye(now)
        self._prompt_mark = ""
        answering = self._start_answer(text, None, now, held=False)
        answering.heard = Heard(text, None, source, b"", now)
        answering.speech_ended = now
        answering.record.transcript = text
        answering.record.stt_provider = source

    def _watch_silence(self, now: float) -> None:
        quiet = now - self._quiet_since
        if not self._asked_still_there and quiet >= self.settings.still_there_after:
            self._asked_still_there = True
            self.log("LIVE", f"caller silent for {quiet:.0f} s: asking whether they are still there")
            self._play_prompt("still-there")
        elif self._asked_still_there and quiet >= self.settings.goodbye_after:
            self.log("LIVE", "caller still silent: goodbye")
            self._goodbye(EndReason.SILENCE, now)

    def _interrupt_for_goodbye(self, now: float) -> None:
        """Stop what is playing or being prepared (keeping the turn) before the goodbye."""
        if self._answering is not None and self._answering.heard is not None:
            answering, self._answering = self._answering, None
            answering.answer.cancel()
            unsent = self.leg.queued_seconds()
            self.leg.stop_playing()
            played = max(0.0, answering.answer.snapshot(sentences=False).queued_seconds - unsent)
            self._store_answered(answering, played, interrupted=True, now=now)
        else:
            self.leg.stop_playing()
            self._drop_answer()

    def _goodbye(self, reason: EndReason, now: float) -> None:
        if self._ending is not None:
            return
        self._ending = reason
        seconds = self._play_prompt("goodbye")
        self._ending_until = now + self.leg.queued_seconds() + seconds + GOODBYE_GRACE_SECONDS

    # -- the end ------------------------------------------------------------------------------------
    def _caller_gone(self) -> None:
        """The leg closed: whatever was going on is stored as it stood."""
        now = time.monotonic()
        answering, self._answering = self._answering, None
        if answering is not None:
            answering.answer.cancel()
            progress = answering.answer.snapshot()
            if answering.heard is not None and progress.first_audio_at is not None:
                answering.record.error = "caller hung up during the answer"
                self._store_answered(answering, progress.queued_seconds - self.leg.queued_seconds(),
                                     interrupted=True, now=now)
            elif answering.heard is not None:
                record = answering.record
                record.status, record.error = TurnStatus.HANGUP, "caller hung up while the assistant was thinking"
                record.transcript = answering.heard.text
                self._store(record)
        utterance = self._utterance or (self._pending[0] if self._pending else None)
        if utterance is not None:
            utterance.cancel()
            if utterance.seconds >= MIN_STORED_UTTERANCE_SECONDS:
                record = TurnRecord(turn_number=self.turns + 1, status=TurnStatus.HANGUP,
                                    error="caller hung up while asking", transcript=utterance.words_so_far() or None)
                record.timings["recording"] = int(utterance.seconds * 1000)
                self._store(record)

    def _finish(self, reason: EndReason) -> None:
        if self._answering is not None:
            self._answering.answer.cancel()
        if self._utterance is not None:
            self._utterance.cancel()
        if not self._closed:
            try:
                self.leg.hang_up()
            except Exception as exc:  # the leg may be gone already
                self.log("LIVE", f"closing the media leg: {exc}", logging.WARNING)
        self._writer.close(timeout=10.0)
        self.log("LIVE", f"conversation ended ({reason}) after {self.turns} turns, "
                         f"{time.monotonic() - self.started:.0f} s")


