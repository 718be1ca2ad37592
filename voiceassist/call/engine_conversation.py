"""A real-time call run by a conversation engine (``[live] engine``) instead of the cascade.

The engine (an AI server over the external-AI WebSocket protocol, a speech-to-speech model) hears
the caller and answers in speech itself. This side carries the audio both ways over the
:class:`~.media.MediaLeg`, stops the answer when the engine says the caller started talking
(barge-in), and keeps what the cascade keeps: every exchange is a stored turn (the engine's own
transcripts, what the caller heard of an interrupted answer, the time from the end of the
caller's speech to the first answer audio measured on the media stream), the call's limits and
its keys (``#`` ends the call).

When the engine cannot be reached at the start of the call, or fails mid-call (its connection
closes, it sends a fatal error, it does not begin an answer within ``response_timeout``), the
cascade takes over on the same leg (:class:`~.realtime.LiveConversation` with a
:class:`~.realtime.TakeOver`): the caller hears "one moment", and the question the engine left
unanswered is answered with the call's history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..audio.conversion import UlawEncoder, ulaw_to_pcm
from ..audio.endpointing import VoiceDetector, webrtc_detector
from ..audio.prompts import PromptSounds
from ..errors import AudioError, ProviderError, VoiceAssistError
from ..logs import logger
from ..providers.base import ConversationEngine, EngineSession
from ..types import CallInfo, EngineEvent, EngineEventKind, Exchange, ToolCall, TurnRecord, TurnStatus
from .actions import TOOL_APOLOGY, TRANSFER, Action, ActionKind, decide
from .assistant import Assistant
from .call_events import CallerLookup, announce
from .channel import CallLog
from .conversation import conversation_for
from .keys import KeyAction, key_map
from .media import FRAME_SECONDS, MediaEventKind, MediaLeg
from .realtime import (ACTION_ENDS, GOODBYE_GRACE_SECONDS, HARD_LIMIT_GRACE_SECONDS, NO_FRAMES_GAP_SECONDS, EndReason,
                       LiveConversation, LiveOutcome, LiveSettings, TakeOver, TurnWriter)
from .summary import recall
from .tools import HttpTool, find_tool, run_tool

ENGINE_RATE = 8000  # the engines' audio: 8 kHz μ-law both ways
# The most of an answer's words kept for its turn (a server repeating itself must not fill the disk).
MAX_REPLY_CHARS = 8000
# Engine events handled per pass of the loop, between the caller's frames.
MAX_EVENTS_PER_TICK = 50
# More audio than this waiting for the caller is no answer (an engine sending without end).
MAX_QUEUED_SECONDS = 120.0
# An answer's end asked for, all of it sent: stored as played this long after, if the transport
# never reports the mark.
MARK_GRACE_SECONDS = 2.0
# A transport may hold this much of what was queued before the caller hears it.
LEAD_SECONDS = 0.2
# An answer that has played with none of its words known yet waits this long for them (the
# protocol does not order an engine's transcripts before its end of answer).
LATE_WORDS_SECONDS = 1.0
# The most of an answer's audio kept for the repeat key (60 s at 16 kHz).
MAX_REPEAT_BYTES = 60 * 16000 * 2
# Voice on the line that counts as a question the engine must answer (a cough does not).
MIN_QUESTION_MS = 700
# A pause this long between voiced frames starts a new utterance.
QUESTION_GAP_SECONDS = 1.5


@dataclass
class _Answer:
    """The engine's answer in progress: its turn, what it said and what has been queued of it."""

    record: TurnRecord
    reply: list[str] = field(default_factory=list)
    queued_seconds: float = 0.0
    first_audio_at: float | None = None
    done_mark: str = ""
    # The caller had spoken before it began (else the engine spoke on its own: a greeting).
    prompted: bool = True
    audio: bytearray = field(default_factory=bytearray)  # what was played of it (for the repeat key)

    def text(self) -> str:
        return " ".join(self.reply).strip()


class EngineConversation:
    """One real-time call over a conversation engine (see the module's docstring). :meth:`run`
    returns when the call is over and the leg is closed; it never raises."""

    def __init__(self, leg: MediaLeg, assistant: Assistant, call: CallInfo, prompts: PromptSounds,
                 engine: ConversationEngine, *, settings: LiveSettings | None = None,
                 detector: VoiceDetector | None = None, turns_before: int = 0,
                 on_turn: Callable[[TurnRecord], None] | None = None) -> None:
        self.leg, self.assistant, self.call, self.prompts, self.engine = leg, assistant, call, prompts, engine
        self._on_turn = on_turn
        self.settings = settings or LiveSettings.from_config(assistant.config.live)
        self.rate = leg.sample_rate
        self.log = CallLog(None, call.uniqueid)
        self._detector = detector or webrtc_detector(2, self.rate)
        self._encoder = UlawEncoder(self.rate)
        self.exchanges: list[Exchange] = []
        self.turns = turns_before
        self.started = time.monotonic()
        self._session: EngineSession | None = None
        self._memory = ""
        self._question = ""             # the caller's words the engine reported, not yet answered
        self._voice_ended_at: float | None = None   # the caller's last voiced frame (ours, on the media)
        self._voiced_ms = 0             # voice heard since the engine last began an answer
        # The caller's audio since then (the cascade's recogniser hears it if the engine fails
        # without saying what it heard), at most [live] max_utterance_seconds of it.
        self._since_answer = bytearray()
        self._max_kept = int(self.settings.listening.max_s * self.rate) * 2
        self._waiting_since: float | None = None    # the caller finished a question; no answer yet
        self._answer: _Answer | None = None
        self._played: tuple[_Answer, float] | None = None  # played, its words awaited until then
        self._marks = 0
        self._prompt_until = 0.0        # when our own prompt (the greeting) has played
        self._last_frame_at = time.monotonic()
        self._last_engine_at = time.monotonic()  # the engine's last event
        self._closed = False
        self._ending: EndReason | None = None
        self._ending_until = 0.0
        self._writer = TurnWriter(assistant, call, self.log)
        self._outcome = LiveOutcome(EndReason.HANGUP)
        # An action the engine asked for and the configuration allows (a transfer, a message, the
        # end of the call): it is carried out once the engine's confirmation has played.
        self._action: Action | None = None
        self._action_at = 0.0
        self._action_say = ""
        self._action_stored = False     # a turn carries it (the confirmation, played or cut short)
        self._notes: list[str] = []     # tools that failed, for the turn's error
        self._tool_calls = 0            # the business's tools called since the caller last spoke
        self._reconnects = 0            # sessions opened again after a failure
        self._keys = key_map(assistant.config)
        self._last_audio = bytearray()  # the last answer played in full, and its words (the repeat key)
        self._last_reply = ""
        self._repeat_until = 0.0        # when the repeated answer has played

    # -- the call ------------------------------------------------------------------------------------
    def run(self) -> LiveOutcome:
        self.log("LIVE", f"conversation started over {type(self.leg).__name__} at {self.rate} Hz "
                         f"with the {self.engine.name} engine")
        greeted = False
        try:
            if self.turns == 0:
                announce(self.assistant, "call.started", self.call)
                if self._engine_setting("greet", 1):
                    # The caller hears someone at once; what they say meanwhile goes to the engine.
                    self._prompt_until = time.monotonic() + self._play_prompt("live-greeting") + LEAD_SECONDS
                    greeted = True
            # While the greeting plays: what is known about the caller (the lookup waits at most
            # [webhooks] lookup_timeout), for the engine's instructions.
            lookup = CallerLookup(self.assistant, self.call)
            self._memory = "\n\n".join(part for part in (lookup.text(), recall(self.assistant, self.call, self.log))
                                       if part)
            conversation = conversation_for(self.assistant.config, [], "", None, self._memory)
            self._session = self.engine.open(conversation.system, [], conversation.tools)
        except Exception as exc:  # ProviderError, OSError, a knowledge file gone: the cascade answers
            self.log("ENGINE", f"{self.engine.name} unavailable at the start of the call: {exc}; "
                               "the cascade answers", logging.WARNING)
            self._close_writer()
            if not greeted:
                return LiveConversation(self.leg, self.assistant, self.call, self.prompts, settings=self.settings,
                                        detector=self._detector, turns_before=self.turns, on_turn=self._on_turn).run()
            return self._cascade(TakeOver(self.engine.name, (), self._memory, started=self.started,
                                          say_one_moment=False))
        reason = self._converse()
        while reason is None and self._action is None and self._reconnect():
            reason = self._converse()
        if reason is None and self._action is not None:  # what the engine decided is still done
            self._carry_out(time.monotonic())
            reason = self._ending
        if reason is None:
            return self._hand_over()
        self._finish(reason)
        self._outcome.reason, self._outcome.turns = reason, self.turns
        return self._outcome

    def _converse(self) -> EndReason | None:
        try:
            return self._loop()
        except Exception:  # a bug: the cascade still gets the call
            logger.exception("[LIVE] %s unexpected error in the engine conversation", self.call.uniqueid)
            return None

    def _loop(self) -> EndReason | None:
        """Until the call ends (its reason) or the engine fails (None)."""
        assert self._session is not None
        session = self._session
        while True:
            event = self.leg.next_event(FRAME_SECONDS)
            now = time.monotonic()
            arrived = (event.at or now) if event is not None else now
            if self._ending is None and (event is None or event.kind is MediaEventKind.AUDIO):
                if not self._fill_silence(session, arrived, arriving=event is not None):
                    return None
            if event is not None:
                if event.kind is MediaEventKind.CLOSED:
                    self._closed = True
                    self._caller_gone(now)
                    return self._ending or EndReason.HANGUP
                if event.kind is MediaEventKind.AUDIO and self._ending is None:
                    if not self._send(session, event.audio, arrived):
                        return None
                    self._last_frame_at = max(self._last_frame_at, arrived)
                elif event.kind is MediaEventKind.MARK:
                    self._on_mark(event.mark, now)
                elif event.kind is MediaEventKind.DTMF:
                    self._on_digit(event.digit, now)
                elif event.kind is MediaEventKind.TEXT and self._ending is None:
                    self._on_text(event.text)
            if self._ending is not None:
                if now >= self._ending_until:
                    return self._ending
                continue
            for _ in range(MAX_EVENTS_PER_TICK):  # the caller's own events are never starved
                if (engine_event := session.next_event(0)) is None:
                    break
                self._last_engine_at = now
                if not self._on_engine(engine_event, now):
                    return None
            if self.leg.queued_seconds() > MAX_QUEUED_SECONDS:
                self.log("ENGINE", f"{self.engine.name} sent more audio than an answer holds", logging.WARNING)
                return None
            if self._action is not None and self._answer is None and (
                    self._action_stored or now - self._action_at > self._response_timeout()):
                self._carry_out(now)
                continue
            if self._answer is None and self._no_answer(now):
                self.log("ENGINE", f"no answer within {self._response_timeout():.1f} s of the question",
                         logging.WARNING)
                return None
            if self._answer is not None and self._stalled(self._answer, now):
                return None
            if self._played is not None and now >= self._played[1]:
                self._flush_played(now)
            elapsed = now - self.started
            if elapsed >= self.settings.max_call_seconds and (
                    self._answer is None or elapsed >= self.settings.max_call_seconds + HARD_LIMIT_GRACE_SECONDS):
                self.log("LIVE", f"call limit of {self.settings.max_call_seconds:.0f} s reached")
                self._goodbye(EndReason.LIMIT, now)

    def _stalled(self, answer: _Answer, now: float) -> bool:
        """An answer the engine began and went quiet on, with nothing left to play: it failed
        (True), unless its end was asked for and the transport never said it played (then it is
        stored as played)."""
        if self.leg.queued_seconds() > 0:
            return False
        quiet = now - max(self._last_engine_at, answer.first_audio_at or 0.0)
        if answer.done_mark:
            if quiet > MARK_GRACE_SECONDS:
                self._on_mark(answer.done_mark, now)
            return False
        if quiet > self._response_timeout():
            self.log("ENGINE", f"{self.engine.name} went quiet in the middle of an answer", logging.WARNING)
            return True
        return False

    def _no_answer(self, now: float) -> bool:
        """Whether the engine has let a question go unanswered for longer than its
        ``response_timeout``: from its transcript of the question, or, when it sent none, from
        the end of the caller's voice on the line (plus its own end silence)."""
        timeout = self._response_timeout()
        if self._waiting_since is not None:
            return now - self._waiting_since > timeout
        if self._voiced_ms >= MIN_QUESTION_MS and self._voice_ended_at is not None:
            return now - self._voice_ended_at > timeout + self._engine_setting("vad_silence_duration_ms", 500) / 1000
        return False

    def _engine_setting(self, name: str, default: float) -> float:
        return float(getattr(getattr(self.engine, "settings", None), name, default))

    def _response_timeout(self) -> float:
        return self._engine_setting("response_timeout", 8.0)

    # -- the caller's audio ---------------------------------------------------------------------------
    def _fill_silence(self, session: EngineSession, now: float, *, arriving: bool) -> bool:
        """A line that sends no frames while the caller is quiet (silence suppression, Asterisk's
        Local channel) still tells the engine the caller went quiet: the missing time is sent as
        silence, as a phone that sends frames would have (else the engine's own end-of-speech
        detection never ends the question). False: the engine is gone."""
        missing = now - self._last_frame_at
        if missing < NO_FRAMES_GAP_SECONDS or (not arriving and self.leg.audio_waiting()):
            return True
        frames = int(missing / FRAME_SECONDS) - (1 if arriving else 0)
        silence = bytes(2 * int(self.rate * FRAME_SECONDS))
        for _ in range(frames):
            if not self._send(session, silence, now):
                return False
        self._last_frame_at = max(self._last_frame_at, now)
        return True

    def _send(self, session: EngineSession, pcm: bytes, at: float) -> bool:
        try:
            voiced = self._detector.is_speech(pcm)
        except Exception:  # a frame of another length (a transport's last partial frame)
            voiced = False
        if voiced and self._voice_ended_at is not None and at - self._voice_ended_at > QUESTION_GAP_SECONDS:
            # A new utterance after a long pause: voice heard before it (noise, a word) is not its start.
            self._voiced_ms = 0
            self._since_answer.clear()
        if self._answer is None:  # words over an answer are the engine's to judge (barge-in)
            if voiced or self._voiced_ms:
                self._since_answer += pcm
                if len(self._since_answer) > self._max_kept:
                    del self._since_answer[:len(self._since_answer) - self._max_kept]
            if voiced:
                self._voiced_ms += int(FRAME_SECONDS * 1000)
        if voiced:
            self._voice_ended_at = at
        try:
            session.send_audio(self._encoder.encode(pcm))
        except ProviderError as exc:
            self.log("ENGINE", f"{exc}", logging.WARNING)
            return False
        return True

    # -- the engine ---------------------------------------------------------------------------------
    def _on_engine(self, event: EngineEvent, now: float) -> bool:
        """Act on one engine event; False: the engine failed."""
        kind = event.kind
        if kind is EngineEventKind.AUDIO:
            answer = self._answer or self._start_answer()
            try:
                pcm = ulaw_to_pcm(event.audio, ENGINE_RATE, self.rate)
            except AudioError as exc:
                self.log("ENGINE", f"unplayable audio skipped: {exc}", logging.WARNING)
                return True
            if answer.first_audio_at is None:
                answer.first_audio_at = now
                if self._voice_ended_at is not None and self._voiced_ms >= MIN_QUESTION_MS:
                    answer.record.timings["speech_to_audio"] = max(0, int((now - self._voice_ended_at) * 1000))
            self._waiting_since = None
            self._voiced_ms = 0
            self._since_answer.clear()
            self.leg.play(pcm)
            answer.queued_seconds += len(pcm) / 2 / self.rate
            if len(answer.audio) < MAX_REPEAT_BYTES:
                answer.audio += pcm
        elif kind is EngineEventKind.CALLER_SAID:
            if self._answer is None and self._played is not None and not self._played[0].record.transcript:
                self._played[0].record.transcript = event.text  # the words of an answer that has played
            elif self._answer is not None and not self._answer.record.transcript:
                self._answer.record.transcript = event.text  # the engine's transcript came late
            else:
                self._question = f"{self._question} {event.text}".strip()[:MAX_REPLY_CHARS]
                # Waited on only when the caller spoke since the last answer began: words during
                # an answer may be a mere "uh-huh", and a transcript may come after its answer.
                if self._answer is None and self._voiced_ms >= MIN_QUESTION_MS:
                    self._waiting_since = self._waiting_since or now
        elif kind is EngineEventKind.ASSISTANT_SAID:
            if self._answer is None and self._played is not None:
                self._played[0].reply.append(event.text[:MAX_REPLY_CHARS])
                self._flush_played(now)
                return True
            answer = self._answer or self._start_answer()
            if sum(len(part) for part in answer.reply) < MAX_REPLY_CHARS:
                answer.reply.append(event.text)
        elif kind is EngineEventKind.SPEECH_STARTED:
            self._barge_in(now)
        elif kind is EngineEventKind.TOOL_CALL and event.tool is not None:
            self._on_tool_call(event.tool, now)
        elif kind is EngineEventKind.DONE:
            if self._answer is not None and not self._answer.done_mark:
                self._marks += 1
                self._answer.done_mark = f"engine-answer-{self._marks}"
                self.leg.mark(self._answer.done_mark)
        elif kind is EngineEventKind.ERROR:
            if event.fatal:
                self.log("ENGINE", f"{self.engine.name} failed: {event.text}", logging.WARNING)
                return False
            self.log("ENGINE", f"{self.engine.name} reported: {event.text}", logging.WARNING)
        return True

    # -- actions and tools -------------------------------------------------------------------------
    def _on_tool_call(self, call: ToolCall, now: float) -> None:
        """The engine asks for a tool: one of the business's HTTP tools is called (on a thread of
        its own: the caller's audio keeps flowing) and its result sent back; an action is checked
        against the configuration (:func:`~.actions.decide`), and one that is allowed is carried
        out once the engine has told the caller (a refused one is explained by the engine)."""
        assert self._session is not None
        config = self.assistant.config
        session = self._session
        self.log("ENGINE", f"{self.engine.name} asks for {call.name}")
        if self._action is not None:
            self._tell(session, call, "Already being done. Say nothing more.")
            return
        tool = find_tool(config, call.name)
        if tool is not None:
            self._tool_calls += 1
            if self._tool_calls > config.tools.max_calls_per_turn:
                self._notes.append(f"{call.name} not called: more than {config.tools.max_calls_per_turn} tool "
                                   "calls for one question")
                self._tell(session, call, f"Not called: too many lookups for one question. Tell the caller: "
                                          f"{TOOL_APOLOGY}")
                return
            self._waiting_since = self._waiting_since or now  # the answer now waits on the tool
            threading.Thread(target=self._run_tool, args=(session, tool, call), daemon=True,
                             name=f"voiceassist-tool-{self.call.uniqueid}").start()
            return
        decision = decide(config, call)
        if decision.action.kind is ActionKind.REFUSED:
            self._tell(session, call, f"Not done: that is not allowed. Tell the caller: {decision.say}")
            return
        self._action, self._action_at = decision.action, now
        self._action_say = decision.say
        self._tell(session, call, f"Done. Tell the caller only this, in a few words: {decision.say}")

    def _run_tool(self, session: EngineSession, tool: HttpTool, call: ToolCall) -> None:
        result = run_tool(tool, call, self.assistant.config.tools.max_response_chars)
        self.log("TOOL", f"{call.name} {'answered' if result.ok else f'failed: {result.error}'}")
        if not result.ok:
            self._notes.append(f"{call.name} failed: {result.error}")
        self._tell(session, call, result.content if result.ok else f"The lookup failed. Tell the caller: {TOOL_APOLOGY}")

    def _tell(self, session: EngineSession, call: ToolCall, output: str) -> None:
        try:
            session.send_tool_result(call, output)
        except ProviderError as exc:  # the engine is gone: its reader reports it
            self.log("ENGINE", f"{exc}", logging.WARNING)

    def _carry_out(self, now: float) -> None:
        """End the conversation with the action (the engine told the caller, or said nothing
        within ``response_timeout``)."""
        action = self._action
        assert action is not None
        if not self._action_stored:
            record = TurnRecord(turn_number=self.turns + 1, transcript=self._question or None,
                                reply=self._action_say or None, status=TurnStatus.OK,
                                stt_provider=self.engine.name, llm_provider=self.engine.name)
            record.action, record.action_target = action.kind.value, action.stored_target()
            self._question = ""
            self.turns = record.turn_number
            self._writer.add(record)
            if self._on_turn is not None:
                self._on_turn(record)
        self.log("ACTION", f"{action.kind} {action.stored_target() or ''}")
        self.leg.stop_playing()
        self._outcome.action = action
        self._ending = ACTION_ENDS[action.kind]
        self._ending_until = now

    def _start_answer(self) -> _Answer:
        self._flush_played(time.monotonic())
        record = TurnRecord(turn_number=self.turns + 1, transcript=self._question or None,
                            stt_provider=self.engine.name, llm_provider=self.engine.name,
                            tts_provider=self.engine.name)
        prompted = bool(self._question) or self._voiced_ms >= MIN_QUESTION_MS
        self._question = ""
        self._answer = _Answer(record, prompted=prompted)
        return self._answer

    def _on_mark(self, name: str, now: float) -> None:
        answer = self._answer
        if answer is not None and name == answer.done_mark:
            self._answer = None
            self._flush_played(now)
            if answer.reply:
                self._store(answer, answer.queued_seconds, interrupted=False, now=now)
            else:  # its words may still come (see LATE_WORDS_SECONDS)
                self._played = (answer, now + LATE_WORDS_SECONDS)

    def _flush_played(self, now: float) -> None:
        """Store the answer that played while its words were awaited, with what came of them."""
        if self._played is not None:
            answer, self._played = self._played[0], None
            self._store(answer, answer.queued_seconds, interrupted=False, now=now)

    def _barge_in(self, now: float) -> None:
        answer = self._answer
        if answer is None and (now < self._prompt_until or now < self._repeat_until):
            self.leg.stop_playing()  # the caller talks over our greeting, or a repeated answer
            self._prompt_until = self._repeat_until = 0.0
            return
        if answer is not None and answer.first_audio_at is None:
            self._answer = None  # words the engine had not begun to speak: the caller goes on
            return
        if answer is None:
            return
        unsent = self.leg.queued_seconds()
        self.leg.stop_playing()
        played = max(0.0, answer.queued_seconds - unsent)
        self._answer = None
        if self._session is not None:
            try:  # the engine stops the answer and keeps only what was heard of it
                self._session.answer_cut(played)
            except ProviderError as exc:  # gone: its reader reports it
                self.log("ENGINE", f"{exc}", logging.WARNING)
        self._store(answer, played, interrupted=True, now=now)
        self.log("LIVE", f"barge-in: the caller spoke {played:.1f} s into the engine's answer")

    def _store(self, answer: _Answer, played: float, *, interrupted: bool, now: float) -> None:
        record = answer.record
        reply = answer.text()
        if not answer.prompted and not record.transcript:
            # Not an exchange: the engine spoke before the caller said anything (its greeting).
            self.log("LIVE", f"the {self.engine.name} engine spoke on its own for {played:.1f} s: "
                             f"{reply[:80] or '(no transcript)'}")
            return
        record.reply = reply or None
        record.status = TurnStatus.OK
        heard = _heard_part(reply, played, answer.queued_seconds) if interrupted else reply
        record.interrupted = interrupted
        record.heard_reply = heard if interrupted else None
        record.timings["played"] = int(played * 1000)
        if self._action is not None and not self._action_stored:  # the engine's confirmation of it
            record.action, record.action_target = self._action.kind.value, self._action.stored_target()
            self._action_stored = True
        if self._notes:
            record.error = "; ".join([record.error, *self._notes] if record.error else self._notes)[:500]
            self._notes = []
        self._tool_calls = 0
        if answer.first_audio_at is not None:
            record.timings["total"] = int((now - answer.first_audio_at) * 1000) + \
                record.timings.get("speech_to_audio", 0)
        self.turns = max(self.turns, record.turn_number)
        self._writer.add(record)
        if self._on_turn is not None:
            self._on_turn(record)
        self.exchanges.append(Exchange(record.transcript or "", heard))
        if not interrupted and answer.audio:
            self._last_audio, self._last_reply = answer.audio, reply
        self._outcome.transcript, self._outcome.reply = record.transcript or "", reply
        self.log("LIVE", f"turn {record.turn_number} ({self.engine.name}): "
                         f"{'interrupted after' if interrupted else 'played'} {played:.1f} s; end of speech to "
                         f"first audio {record.timings.get('speech_to_audio')} ms")

    # -- keys, limits and the end ------------------------------------------------------------------------
    def _on_digit(self, digit: str, now: float) -> None:
        """A key ([actions] key_*), as in the cascade's calls: skip the rest of the answer (with no
        answer playing: end the call politely), hear the last answer again, or be transferred to
        the operator once the engine has said so; other keys go to the engine as words with
        ``keys_to_model``."""
        what = self._keys.get(digit)
        self.log("LIVE", f"key {digit!r} pressed: {what or 'nothing to do'}")
        if self._ending is not None or self._session is None or self._action is not None:
            return
        if what is KeyAction.SKIP:
            if self._answer is not None and self._answer.first_audio_at is not None:
                self._barge_in(now)
            elif now < self._repeat_until:  # the repeated answer stops; the call goes on
                self.leg.stop_playing()
                self._repeat_until = 0.0
            else:
                self._goodbye(EndReason.CALLER_ENDED, now)
        elif what is KeyAction.REPEAT:
            self._repeat(digit, now)
        elif what is KeyAction.OPERATOR:
            self._to_operator(digit, now)
        elif self.assistant.config.actions.keys_to_model and digit in "0123456789*#":
            self._on_text(f"(The caller pressed {digit} on the phone's keypad.)")

    def _repeat(self, digit: str, now: float) -> None:
        """The last answer again, as it was heard the first time (its audio is kept)."""
        if not self._last_audio:
            return
        if self._answer is not None:
            self._barge_in(now)
        self.leg.stop_playing()
        self.leg.play(bytes(self._last_audio))
        self._repeat_until = now + len(self._last_audio) / 2 / self.rate + LEAD_SECONDS
        record = TurnRecord(turn_number=self.turns + 1, transcript=f"[key {digit}]", reply=self._last_reply or None,
                            status=TurnStatus.OK, stt_provider="keys", llm_provider="keys",
                            tts_provider=self.engine.name)
        self.turns = record.turn_number
        self._writer.add(record)

    def _to_operator(self, digit: str, now: float) -> None:
        """The operator key: the transfer is decided here (the operator destination); the engine
        is asked to tell the caller, and the call goes on to the dialplan once it has (or within
        ``response_timeout`` if it says nothing)."""
        decision = decide(self.assistant.config, ToolCall(TRANSFER, {"destination": self.assistant.config.actions.operator}))
        if decision.action.kind is ActionKind.REFUSED:
            return
        if self._answer is not None:
            self._barge_in(now)
        self._action, self._action_at, self._action_say = decision.action, now, decision.say
        self._question = f"[key {digit}]"
        assert self._session is not None
        try:
            self._session.send_text(f"(The caller pressed the operator key. Tell them only this: {decision.say})")
        except ProviderError as exc:
            self.log("ENGINE", f"{exc}", logging.WARNING)

    def _on_text(self, text: str) -> None:
        """Words the caller's side typed: the engine answers them as it would speech (the
        engine's transcript of them, or the text itself, is the turn's question)."""
        if self._session is None:
            return
        self._question = f"{self._question} {text}".strip()[:MAX_REPLY_CHARS]
        try:
            self._session.send_text(text)
        except ProviderError as exc:
            self.log("ENGINE", f"{exc}", logging.WARNING)

    def _goodbye(self, reason: EndReason, now: float) -> None:
        self._flush_played(now)
        if self._answer is not None:
            self._barge_in(now)
        self.leg.stop_playing()
        self._ending = reason
        seconds = self._play_prompt("goodbye")
        self._ending_until = now + seconds + GOODBYE_GRACE_SECONDS

    def _play_prompt(self, name: str) -> float:
        try:
            pcm = self.prompts.pcm(name, self.rate)
        except AudioError as exc:
            self.log("LIVE", f"prompt {name} unavailable: {exc}", logging.ERROR)
            return 0.0
        self.leg.play(pcm)
        return len(pcm) / 2 / self.rate

    def _caller_gone(self, now: float) -> None:
        self._flush_played(now)
        answer, self._answer = self._answer, None
        if answer is not None and answer.first_audio_at is not None:
            answer.record.error = "caller hung up during the answer"
            self._store(answer, max(0.0, answer.queued_seconds - self.leg.queued_seconds()), interrupted=True, now=now)
        elif self._question:
            record = TurnRecord(turn_number=self.turns + 1, status=TurnStatus.HANGUP, transcript=self._question,
                                error="caller hung up while the assistant was thinking", stt_provider=self.engine.name)
            self.turns = record.turn_number
            self._writer.add(record)

    def _close_session(self) -> None:
        """Close the engine's session on a thread of its own (a server that stopped reading may
        take seconds to let go), so the caller does not wait for it."""
        if self._session is not None:
            threading.Thread(target=self._session.close, daemon=True,
                             name=f"voiceassist-engine-close-{self.call.uniqueid}").start()
            self._session = None

    def _finish(self, reason: EndReason) -> None:
        self._flush_played(time.monotonic())
        self._close_session()
        if not self._closed:
            try:
                self.leg.hang_up()
            except Exception as exc:  # the leg may be gone already
                self.log("LIVE", f"closing the media leg: {exc}", logging.WARNING)
        self._writer.close(timeout=10.0)
        self.log("LIVE", f"conversation ended ({reason}) after {self.turns} turns, "
                         f"{time.monotonic() - self.started:.0f} s")

    def _unanswered(self) -> str:
        """After a failure: the answer the engine had begun is kept as far as the caller heard it,
        and the question it was answering (or the one it left unanswered) is returned, to be
        answered again."""
        self._flush_played(time.monotonic())
        question = self._question
        answer, self._answer = self._answer, None
        if answer is not None:
            unsent = self.leg.queued_seconds()
            self.leg.stop_playing()
            if answer.first_audio_at is not None:
                answer.record.error = "the engine failed during the answer"
                self._store(answer, max(0.0, answer.queued_seconds - unsent), interrupted=True,
                            now=time.monotonic())
            question = question or answer.record.transcript or ""
        return question

    def _reconnect(self) -> bool:
        """A session that failed mid-call is opened again ([engine] reconnect times a call), told
        the call so far; the question left unanswered is put to it again, as words or, if the
        engine never said what it heard, as the caller's audio. False: the cascade takes over."""
        if self._closed or self._reconnects >= int(self._engine_setting("reconnect", 0)):
            return False
        self._reconnects += 1
        question = self._unanswered()
        self._close_session()
        try:
            conversation = conversation_for(self.assistant.config, [], "", None, self._memory)
            self._session = self.engine.open(conversation.system, list(self.exchanges), conversation.tools)
        except Exception as exc:
            self.log("ENGINE", f"{self.engine.name} could not be reached again: {exc}", logging.WARNING)
            return False
        now = time.monotonic()
        self.log("ENGINE", f"{self.engine.name} failed mid-call; a new session goes on with the call "
                           f"({self._reconnects} of {int(self._engine_setting('reconnect', 0))})")
        self._last_engine_at = self._last_frame_at = now
        try:
            if question:
                self._question = ""
                self._on_text(question)
                self._waiting_since = now
            elif self._voiced_ms >= MIN_QUESTION_MS and self._since_answer:
                frame = 2 * int(self.rate * FRAME_SECONDS)
                for start in range(0, len(self._since_answer), frame):  # as a line would carry it
                    self._session.send_audio(self._encoder.encode(bytes(self._since_answer[start:start + frame])))
                self._voice_ended_at = now
        except ProviderError as exc:
            self.log("ENGINE", f"{exc}", logging.WARNING)
            return False
        return True

    def _hand_over(self) -> LiveOutcome:
        """The cascade takes the call on this leg (see the module's docstring)."""
        question = self._unanswered()
        self._close_session()
        self._close_writer()
        self.log("ENGINE", f"{self.engine.name} failed mid-call; the cascade answers from here")
        unheard = bytes(self._since_answer) if not question and self._voiced_ms >= MIN_QUESTION_MS else b""
        return self._cascade(TakeOver(self.engine.name, tuple(self.exchanges), self._memory, question, unheard,
                                      started=self.started))

    def _cascade(self, taking_over: TakeOver) -> LiveOutcome:
        return LiveConversation(self.leg, self.assistant, self.call, self.prompts, settings=self.settings,
                                detector=self._detector, turns_before=self.turns, taking_over=taking_over,
                                on_turn=self._on_turn).run()

    def _close_writer(self) -> None:
        """Let the engine's turns be written on their own thread (the turns carry their numbers):
        a slow database must not keep the caller waiting for the cascade."""
        threading.Thread(target=self._writer.close, args=(10.0,), daemon=True,
                         name=f"voiceassist-store-end-{self.call.uniqueid}").start()


def _heard_part(reply: str, played: float, queued: float) -> str:
    """The words of ``reply`` the caller heard when ``played`` of ``queued`` seconds had played
    (in proportion: the engines do not say where each word falls)."""
    if not reply or queued <= 0:
        return ""
    words = reply.split()
    return " ".join(words[: int(len(words) * min(1.0, played / queued))])


def engine_for(assistant: Assistant) -> Any:
    """The configured conversation engine, or None for the cascade."""
    name = assistant.config.live.engine
    if name == "cascade":
        return None
    from ..providers import registry

    try:
        return registry.create_named("engine", name, assistant.config)
    except VoiceAssistError as exc:
        logger.error("[LIVE] the %s engine cannot be used (%s): the cascade answers", name, exc)
        return None
