"""One question of a call: recording -> speech-to-text -> chat model -> text-to-speech -> μ-law ->
database, and what the call does next.

The turn never raises to its caller: every outcome becomes a stored turn with a status and a
:class:`TurnOutcome` (what to play next, whether to offer another question), which the wire turns
into what the dialplan reads (``voiceassist.asterisk.dialplan``). It talks to its call through a
:class:`~voiceassist.call.channel.CallChannel` only.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..audio.conversion import write_phone_audio
from ..audio.recording import read_recording, speech_frames
from ..deadline import turn_deadline
from ..errors import AudioError, CallerHungUp, ConfigError, ProviderBadResponse, ProviderError, VoiceAssistError
from ..logs import logger
from ..text.languages import primary
from ..text.speakable import speakable
from ..types import CallState, Exchange, Stage, ToolCall, TurnRecord, TurnStatus
from .assistant import Assistant
from .call_events import FACTS_FILE, CallerLookup, LiveWords, announce
from .channel import CallChannel, CallLog
from .actions import TRANSFER, ActingReply, Action, decide
from .keys import KeyAction, escape_keys, key_map
from .conversation import open_reply
from .playback import SentencePipeline
from .records import call_history, store_turn
from .requests import TurnRequest, channel_language
from .summary import recall

# How many 20 ms frames above the silence threshold make a question worth sending to speech-to-text.
MIN_SPEECH_FRAMES = 5
# Seconds between the end of the caller's speech and the start of the turn that the turn's deadline
# believes (end-of-question detection plus AGI start-up take one to three).
MAX_DEADLINE_HEAD_START = 10.0
# What the caller was waiting for when they hung up, by the stage the turn was in.
HUNG_UP_WHILE = {Stage.STT: "while their question was being transcribed", Stage.LLM: "while the assistant was thinking",
                 Stage.TTS: "before the answer started"}


@dataclass(frozen=True)
class TurnOutcome:
    """What the call does after a turn: play ``answer`` (a sound name; "" for nothing: a
    pipelined answer was played already), then offer another question or say goodbye."""

    answer: str
    more: bool
    status: str
    transcript: str
    reply: str
    # What the dialplan does after the answer (a transfer, a message, the end); None: nothing.
    action: Action | None = None
    # The answer's sound, for the repeat key ("": none kept).
    last_answer: str = ""
    # The caller's language, when the turn found it is not the call's: the channel's language
    # (CHANNEL(language)) becomes this, so the prompts and the next questions follow ("": unchanged).
    language: str = ""


class _NoSpeech(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _safe_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", text) or "unknown"


class Turn:
    """One question: recording -> speech-to-text -> chat model -> text-to-speech -> μ-law -> database.

    What the dialplan asked, validated: :class:`~voiceassist.asterisk.dialplan.TurnRequest` (the recording
    inside this call's directory, WaitForNoise's WAITSTATUS, turn number, call start, extension,
    linkedid, and when the caller stopped talking).
    """

    def __init__(self, channel: CallChannel, assistant: Assistant, request: TurnRequest) -> None:
        self.channel = channel
        # The call's language picks its providers, prompts and settings.
        self.assistant = assistant = assistant.in_language(request.call.language)
        self.config = assistant.config
        self.request = request
        self.recording_path = str(request.recording)
        self.heard = request.heard
        self.turn_number = request.turn_number
        self.call_started = request.call_started
        self.call = request.call.call_info()
        self.speech_ended = request.speech_ended
        self.log = CallLog(channel, self.call.uniqueid)
        self.words = LiveWords(assistant, self.call)  # the console's live view
        general = self.config.general
        self.prompts = general.prompts.rstrip("/")
        self.record = TurnRecord(turn_number=self.turn_number, recording_path=self.recording_path or None,
                                 language=self.config.general.language)
        self.answer_sound = ""
        self.more = True
        self.pipelined = general.playback == "pipelined"
        self.started = time.monotonic()
        self.stage = Stage.STT
        self.action: Action | None = None
        self.switched_to = ""  # the channel language the caller turned out to speak ("": the call's)

    def run(self) -> TurnOutcome:
        """Answer the question; store the turn whatever happens; say what the call does next."""
        self.started = time.monotonic()
        self.stage = Stage.STT
        if self.turn_number == 1:
            announce(self.assistant, "call.started", self.call)
        cache = Path(self.config.general.answer_dir) / _safe_name(self.call.uniqueid) / FACTS_FILE
        self.lookup = CallerLookup(self.assistant, self.call, cache, ask=self.turn_number == 1)
        try:
            if self.config.problems:
                raise ConfigError("the configuration has errors: " + "; ".join(self.config.problems))
            with turn_deadline(self._deadline_seconds()):
                transcript = self._listen()
                if self.pipelined:
                    self._answer_pipelined(transcript)
                else:
                    reply = self._think(transcript)
                    self._speak(reply)
            self.record.status = TurnStatus.OK
        except _NoSpeech as silence:
            self.record.status = TurnStatus.NO_SPEECH
            self.log("STT", f"no speech ({silence.reason})")
            # A caller who says nothing after "anything else?" is done; on the first turn, ask again.
            if self.turn_number == 1:
                self.answer_sound = f"{self.prompts}/didnt-catch"
            else:
                self.more = False
        except CallerHungUp:
            self._caller_left(f"caller hung up {HUNG_UP_WHILE[self.stage]}")
        except ProviderError as exc:
            self._failed(TurnStatus(f"{self.stage}_error"), self.stage, exc)
        except AudioError as exc:
            self._failed(TurnStatus.STT_ERROR if self.stage is Stage.STT else TurnStatus.TTS_ERROR, self.stage, exc)
        except VoiceAssistError as exc:  # ConfigError and friends
            if isinstance(exc, ConfigError):
                self.more = False  # every later question would meet the same broken setting
            self._failed(TurnStatus.ERROR, self.stage, exc)
        except Exception as exc:  # a bug: log the traceback, still answer the caller
            logger.exception("[%s] %s unexpected error", self.stage.upper(), self.call.uniqueid)
            self._failed(TurnStatus.ERROR, self.stage, exc)
        finally:
            self.record.timings["total"] = self._elapsed_ms(self.started)
            self._store()
            self._cleanup()
        return self._outcome()

    def _deadline_seconds(self) -> float:
        """``[general] turn_deadline`` counted from the end of the caller's speech (as the dialplan
        placed it), not from the start of this turn: finding the end of the question and starting
        the AGI have already used part of it. Up to MAX_DEADLINE_HEAD_START is taken off; more would
        be a clock that differs between Asterisk's host and ours, and the turn then counts from now."""
        seconds = self.config.general.turn_deadline
        if seconds <= 0 or self.speech_ended is None:
            return seconds
        used = time.time() - self.speech_ended
        return seconds - used if 0 <= used <= MAX_DEADLINE_HEAD_START else seconds

    def mark_first_audio(self) -> None:
        """The first answer audio is with Asterisk now: time it from the turn's start and, when
        the dialplan told us when the recording stopped, from the end of the caller's speech."""
        self.record.timings["first_audio"] = self._elapsed_ms(self.started)
        if self.speech_ended is not None:
            self.record.timings["speech_to_audio"] = max(0, int((time.time() - self.speech_ended) * 1000))

    @staticmethod
    def _elapsed_ms(since: float) -> int:
        return int((time.monotonic() - since) * 1000)

    def _raise_if_gone(self) -> None:
        if self.channel.hung_up():
            raise CallerHungUp("the caller hung up")

    def _fallback_logger(self, tag: str) -> Callable[[str, VoiceAssistError], None]:
        def on_failure(name: str, exc: VoiceAssistError) -> None:
            self.log(tag, f"{name} failed, trying the next provider: {exc}", logging.WARNING)
            self.words.provider_failed(tag.lower(), name, exc)
        return on_failure

    # -- stages -------------------------------------------------------------------------------
    def _listen(self) -> str:
        if self.heard != "NOISE":
            raise _NoSpeech("the caller did not start talking")
        recording = read_recording(self.recording_path, self.config.general.max_question_seconds)
        self.record.timings["recording"] = int(recording.seconds * 1000)
        if speech_frames(recording) < MIN_SPEECH_FRAMES:
            raise _NoSpeech("recording is silent")
        self._raise_if_gone()
        t0 = time.monotonic()
        # The first question may tell the caller's language ([general] detect_language).
        detecting = self.turn_number == 1 and self.config.general.detect_language
        listener = self.assistant.detecting() if detecting else self.assistant
        transcript, self.record.stt_provider = listener.providers("stt").call(
            lambda stt: stt.transcribe(recording), self._fallback_logger("STT"))
        if detecting and transcript.language:
            self._caller_speaks(transcript.language)
        self.record.timings["stt"] = self._elapsed_ms(t0)
        self.log("STT", f"{len(transcript.text)} chars in {self.record.timings['stt']} ms from "
                        f"{recording.seconds:.1f} s of audio by {self.record.stt_provider} "
                        f"(confidence {transcript.confidence})")
        if not transcript.text.strip():
            raise _NoSpeech("speech-to-text found no words")
        self.record.transcript = text = str(transcript.text)
        self.words.caller(self.turn_number, text, final=True)
        self.record.stt_confidence = transcript.confidence
        return text

    def _caller_speaks(self, heard: str) -> None:
        """The recogniser heard ``heard`` (e.g. "de-de"): a configured language other than the
        call's serves the rest of the turn, and the dialplan is told to switch the channel to it."""
        language = channel_language(heard)
        assistant = self.assistant.in_language(language) if language else self.assistant
        if assistant is self.assistant:
            return
        before = self.config.general.language
        self.assistant, self.config = assistant, assistant.config
        self.record.language = self.config.general.language
        self.switched_to = primary(self.config.general.language)
        self.log("STT", f"the caller speaks {heard}: answering in {self.config.general.language} (not {before})")

    def _history(self) -> list[Exchange]:
        return call_history(self.assistant, self.call, self.log)

    def _about_caller(self) -> str:
        """What is known about the caller for the model: the business's facts, earlier calls."""
        return "\n\n".join(part for part in (self.lookup.text(), recall(self.assistant, self.call, self.log)) if part)

    def _think(self, question: str) -> str:
        self.stage = Stage.LLM
        history = self._history()
        self._raise_if_gone()
        t0 = time.monotonic()
        pieces, self.record.llm_provider = open_reply(self.assistant, history, question, self._fallback_logger("LLM"),
                                                      memory=self._about_caller())
        raw_reply = "".join(pieces)
        self._reply_ended(pieces)
        self.record.timings["llm"] = self._elapsed_ms(t0)
        reply = speakable(raw_reply, language=self.config.general.language)
        if not reply:
            raise ProviderBadResponse(f"{self.record.llm_provider}: nothing sayable in the reply {raw_reply[:80]!r}",
                                      provider=self.record.llm_provider)
        self.record.reply = reply
        self.words.reply(self.turn_number, reply)
        self.log("LLM", f"{len(reply)} chars in {self.record.timings['llm']} ms by {self.record.llm_provider} "
                        f"(history {len(history)} turns)")
        return reply

    def _answer_path(self, part: int | None = None) -> Path:
        suffix = f"-part{part}" if part is not None else ""
        return (Path(self.config.general.answer_dir) / _safe_name(self.call.uniqueid)
                / f"answer-{self.turn_number}{suffix}.ulaw")

    def _synthesize(self, text: str, destination: Path) -> None:
        """Text -> speech (fallback chain) -> μ-law file; adds to the tts/convert timings."""
        t0 = time.monotonic()
        speech, self.record.tts_provider = self.assistant.providers("tts").call(
            lambda tts: tts.synthesize(text), self._fallback_logger("TTS"))
        self.record.timings["tts"] = self.record.timings.get("tts", 0) + self._elapsed_ms(t0)
        audio = self.config.audio
        t0 = time.monotonic()
        write_phone_audio(speech, destination, ffmpeg=audio.ffmpeg, gain_db=audio.volume_gain_db,
                          timeout=audio.timeout, in_process=audio.converter != "ffmpeg")
        self.record.timings["convert"] = self.record.timings.get("convert", 0) + self._elapsed_ms(t0)

    def _speak(self, reply: str) -> None:
        """The design card's flow: one answer file, played by the dialplan's Playback."""
        self.stage = Stage.TTS
        self._raise_if_gone()
        destination = self._answer_path()
        self._synthesize(reply, destination)
        self.record.answer_path = str(destination)
        self.mark_first_audio()
        self.log("TTS", f"answer by {self.record.tts_provider} in {self.record.timings['tts']} ms, "
                        f"converted in {self.record.timings['convert']} ms")
        self._raise_if_gone()
        self.answer_sound = str(destination.with_suffix(""))

    def _answer_pipelined(self, question: str) -> None:
        """Stream the reply, synthesize it sentence by sentence in a worker thread, and play each
        sentence (STREAM FILE) while the next one is being generated and synthesized."""
        self.stage = Stage.LLM
        history = self._history()
        self._raise_if_gone()
        t0 = time.monotonic()

        replies: list[ActingReply] = []
        memory = self._about_caller()

        def start_reply() -> Iterator[str]:  # in the worker: the caller's thread watches for a hang-up
            pieces, self.record.llm_provider = open_reply(self.assistant, history, question,
                                                          self._fallback_logger("LLM"), memory=memory)
            replies.append(pieces)
            self.record.timings["llm_first"] = self._elapsed_ms(t0)
            self.log("LLM", f"first words in {self.record.timings['llm_first']} ms by {self.record.llm_provider} "
                            f"(history {len(history)} turns)")
            return pieces

        said: list[str] = []

        def synthesize(sentence: str, number: int) -> Path:
            said.append(sentence)
            self.words.reply(self.turn_number, " ".join(said))
            path = self._answer_path(number)
            self._synthesize(sentence, path)
            return path

        def reply_done() -> None:
            self.record.timings["llm"] = self._elapsed_ms(t0)

        def first_audio() -> None:
            self.stage = Stage.TTS
            self.mark_first_audio()
            # A hang-up from now on is "during the answer", as in file mode.
            self.channel.set_state(CallState.ANSWERING)

        pipeline = SentencePipeline(start_reply, synthesize, on_reply_done=reply_done, name=self.call.uniqueid,
                                    language=self.config.general.language)
        parts: list[Path] = []
        keys = escape_keys(self.config)
        try:
            parts = pipeline.play(lambda path: self.channel.play(path.with_suffix(""), keys), self._caller_gone,
                                  first_audio)
        except CallerHungUp:
            if not pipeline.playing:
                self.stage = pipeline.stage
                raise
            # The answer was there and partly heard: the turn succeeded, the call is over.
            self.record.error = "caller hung up during the answer"
            self.more = False
            self.log("TTS", self.record.error)
            return
        except BaseException:
            if not pipeline.playing:
                self.stage = pipeline.stage  # what failed: the model's reply or its speech
            raise
        finally:
            pipeline.stop()
            self.record.reply = " ".join(pipeline.sentences) or None
            self.record.answer_path = self._join_parts(pipeline.files)
            if replies:
                self._reply_ended(replies[0])
        self.log("TTS", f"{len(parts)} sentences by {self.record.tts_provider} played; first audio ready "
                        f"{self.record.timings.get('first_audio')} ms into the turn")
        if pipeline.key:
            self._key_pressed(pipeline.key)
        if pipeline.error is not None:
            # The caller heard the first sentences; the rest is lost. Keep the turn, note why.
            cut = f"answer cut short after {len(parts)} sentences: {pipeline.error}"
            self.record.error = (f"{cut}; {self.record.error}" if self.record.error else cut)[:2000]
            self.log("TTS", self.record.error, logging.WARNING)

    def _join_parts(self, files: list[Path]) -> str | None:
        """One answer file per turn, as in the one-file flow (raw μ-law joins by concatenation).

        The caller has already heard the parts: if the disk fills now, the turn stays a success
        and only its audio is not kept (no truncated join, no part files left behind)."""
        if not files:
            return None
        destination = self._answer_path()
        temporary = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temporary, "xb") as joined:
                for part in files:
                    joined.write(part.read_bytes())
            os.replace(temporary, destination)
            return str(destination)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            note = f"answer audio not kept: {exc.strerror or exc}"
            self.record.error = f"{self.record.error}; {note}" if self.record.error else note
            self.log("TTS", note, logging.WARNING)
            return None
        finally:
            for part in files:
                part.unlink(missing_ok=True)

    def _key_pressed(self, key: str) -> None:
        """The caller pressed ``key`` during the answer (its rest is not played)."""
        what = key_map(self.config).get(key)
        self.log("KEYS", f"key {key!r} pressed during the answer: {what or 'nothing to do'}")
        if what is KeyAction.OPERATOR:
            self._took_action(decide(self.config, ToolCall(TRANSFER, {"destination": self.config.actions.operator})).action)
        elif what is KeyAction.REPEAT and self.record.answer_path:
            self.answer_sound = str(Path(self.record.answer_path).with_suffix(""))
        # skip: the rest of the answer is left out; the call goes on to the next question

    def _reply_ended(self, reply: ActingReply) -> None:
        """What the reply did besides its words: an action, and tools that failed (kept as the turn's note)."""
        self._took_action(reply.action)
        for note in reply.notes:
            self.record.error = (f"{self.record.error}; {note}" if self.record.error else note)[:2000]
            self.log("TOOL", note, logging.WARNING)

    def _took_action(self, action: Action | None) -> None:
        """The reply asked for an action: stored with the turn; the call goes where it says."""
        if action is None:
            return
        self.action = action
        self.record.action = action.kind.value
        self.record.action_target = action.stored_target()
        self.log("ACTION", f"{action.kind} {action.stored_target() or ''}".strip())

    # -- outcome ------------------------------------------------------------------------------
    def _failed(self, status: TurnStatus, stage: Stage, exc: BaseException) -> None:
        if self._caller_gone():
            # The caller left while the provider was working; its error no longer matters to them.
            self._caller_left(f"caller hung up {HUNG_UP_WHILE[stage]} ({type(exc).__name__}: {exc})")
            return
        self.record.status = status
        self.record.error = f"{type(exc).__name__}: {exc}"[:2000]
        self._discard_answer()
        self.answer_sound = f"{self.prompts}/cant-answer"
        self.log(stage.upper(), f"failed: {self.record.error}", logging.ERROR)

    def _caller_left(self, error: str) -> None:
        self.record.status = TurnStatus.HANGUP
        self.record.error = error[:2000]
        self.more = False
        self._discard_answer()

    def _caller_gone(self) -> bool:
        return self.channel.hung_up()

    def _discard_answer(self) -> None:
        if self.record.answer_path:
            try:
                os.unlink(self.record.answer_path)
            except OSError:
                pass
            self.record.answer_path = None
        self.answer_sound = ""

    def _store(self) -> None:
        store_turn(self.assistant, self.call, self.record, self.log)

    def _cleanup(self) -> None:
        if not self.config.general.keep_recordings and self.recording_path:
            try:
                os.unlink(self.recording_path)
            except OSError:
                pass

    def _outcome(self) -> TurnOutcome:
        general = self.config.general
        # An action is carried out once the answer has played, whatever else happened (a transfer
        # the caller asked for still happens when the words "transferring you" could not be said).
        action = self.action if self.action is not None and self.action.ends_conversation else None
        more = (self.more and action is None and self.turn_number < general.max_turns
                and time.time() - self.call_started < general.max_call_seconds)
        last = str(Path(self.record.answer_path).with_suffix("")) if self.record.answer_path else ""
        return TurnOutcome(answer=self.answer_sound, more=more, status=self.record.status,
                           transcript=self.record.transcript or "", reply=self.record.reply or "", action=action,
                           last_answer=last, language=self.switched_to)
