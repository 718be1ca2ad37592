"""One AGI invocation of the 8008 flow: a turn (question -> answer file), or the end of the call.

The dialplan (``extensions_custom.conf``) records the question and plays the answer; this module
sits in between. It never raises to its caller: every outcome becomes a stored turn with a status,
and channel variables that tell the dialplan what to play next:

* ``VA_ANSWER``: sound to play (the answer file, or a prompt such as ``didnt-catch``); empty for none.
* ``VA_CONTINUE``: ``1`` to offer another question, ``0`` to say goodbye.
* ``VOICEASSIST_STATUS``, ``VOICEASSIST_TRANSCRIPT``, ``VOICEASSIST_REPLY``: for the admin's own dialplan.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..asterisk.agi import AGISession
from ..asterisk.dialplan import HangupRequest, TurnRequest, parse_request
from ..audio.conversion import write_phone_audio
from ..audio.recording import read_recording, speech_frames
from ..deadline import turn_deadline
from ..errors import (
    AGIError,
    AGIHangup,
    AudioError,
    ConfigError,
    ProviderBadResponse,
    ProviderError,
    RequestError,
    VoiceAssistError,
)
from ..logs import logger
from ..providers.base import ChatModel, StreamingChatModel
from ..text.speakable import speakable
from ..types import Conversation, Recording, TurnRecord
from .assistant import Assistant
from .conversation import conversation_for
from .playback import SentencePipeline

# How many 20 ms frames above the silence threshold make a question worth sending to speech-to-text.
MIN_SPEECH_FRAMES = 5
# Seconds between the end of the caller's speech and the start of the turn that the turn's deadline
# believes (end-of-question detection plus AGI start-up take one to three).
MAX_DEADLINE_HEAD_START = 10.0
# What the caller was waiting for when they hung up, by the stage the turn was in.
HUNG_UP_WHILE = {"stt": "while their question was being transcribed", "llm": "while the assistant was thinking",
                 "tts": "before the answer started"}


class CallLog:
    """Tagged log lines ([STT], [LLM], [TTS], [DB] ...) to the Python log and Asterisk's VERBOSE.

    Only the call's own thread talks to Asterisk: a line logged by a worker (the pipelined
    synthesizer) waits and is sent by the call's thread at its next line or :meth:`flush`, so two
    threads never interleave AGI commands on one connection.
    """

    def __init__(self, session: AGISession | None, uniqueid: str) -> None:
        self.session = session
        self.uniqueid = uniqueid
        self._owner = threading.current_thread()
        self._pending: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, tag: str, message: str, level: int = logging.INFO) -> None:
        logger.log(level, "[%s] %s %s", tag, self.uniqueid, message)
        with self._lock:
            self._pending.append((f"[{tag}] {self.uniqueid} {message}", 1 if level >= logging.WARNING else 3))
        if threading.current_thread() is self._owner:
            self.flush()

    def flush(self) -> None:
        """Send the lines waiting for the call's thread (call only from that thread)."""
        with self._lock:
            lines, self._pending = self._pending, []
        if self.session is None or self.session._closed:
            return
        for line, verbosity in lines:
            try:
                self.session.verbose(line, verbosity)
            except AGIError:
                return  # VERBOSE is dead-channel safe; a closed socket is not worth failing the turn over


class _NoSpeech(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _safe_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", text) or "unknown"


def handle_session(session: AGISession, assistant: Assistant) -> None:
    """Dispatch on the first AGI argument: ``turn`` (default) or ``hangup``, once every value of
    the request is validated (:mod:`voiceassist.asterisk.dialplan`); an invalid one gets the apology."""
    general = assistant.config.section("general")
    try:
        request = parse_request(session.env, session.arguments(), general.get("answer_dir"))
    except RequestError as exc:
        refuse_request(session, general.get("prompts").rstrip("/"), exc)
        return
    if isinstance(request, HangupRequest):
        _end_call(session, assistant, request)
    else:
        Turn(session, assistant, request).run()


def refuse_request(session: AGISession, prompts: str, error: RequestError) -> None:
    """An invalid request: nothing is run, read or deleted; the log says why (the values are
    shown quoted and cut); the caller hears the apology and the call ends."""
    logger.warning("[AGI] request refused (uniqueid %r, channel %r): %s", session.env.get("agi_uniqueid", "")[:80],
                   session.env.get("agi_channel", "")[:80], error.reason)
    try:
        session.set_variable("VA_ANSWER", f"{prompts}/cant-answer")
        session.set_variable("VA_CONTINUE", "0")
        session.set_variable("VOICEASSIST_STATUS", "error")
    except AGIError:
        pass  # the channel is gone (the h extension) or the connection with it


def _reply_pieces(llm: ChatModel, conversation: Conversation) -> Iterator[str]:
    """The chat model's reply as a stream; models without streaming give it in one piece."""
    if isinstance(llm, StreamingChatModel):
        return llm.stream(conversation)
    return iter([llm.reply(conversation)])


class Turn:
    """One question: recording -> speech-to-text -> chat model -> text-to-speech -> μ-law -> database.

    What the dialplan asked, validated: :class:`~voiceassist.asterisk.dialplan.TurnRequest` (the recording
    inside this call's directory, WaitForNoise's WAITSTATUS, turn number, call start, extension,
    linkedid, and when the caller stopped talking).
    """

    def __init__(self, session: AGISession, assistant: Assistant, request: TurnRequest) -> None:
        self.session = session
        self.assistant = assistant
        self.config = assistant.config
        self.request = request
        self.recording_path = str(request.recording)
        self.heard = request.heard
        self.turn_number = request.turn_number
        self.call_started = request.call_started
        self.call = request.call.call_info()
        self.speech_ended = request.speech_ended
        self.log = CallLog(session, self.call.uniqueid)
        general = self.config.section("general")
        self.prompts = general.get("prompts").rstrip("/")
        self.record = TurnRecord(turn_number=self.turn_number, recording_path=self.recording_path or None)
        self.answer_sound = ""
        self.more = True
        self.pipelined = general.get("playback").strip().lower() == "pipelined"
        self.started = time.monotonic()
        self.stage = "stt"

    def run(self) -> None:
        self.started = time.monotonic()
        self.stage = "stt"
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
            self.record.status = "ok"
        except _NoSpeech as silence:
            self.record.status = "no_speech"
            self.log("STT", f"no speech ({silence.reason})")
            # A caller who says nothing after "anything else?" is done; on the first turn, ask again.
            if self.turn_number == 1:
                self.answer_sound = f"{self.prompts}/didnt-catch"
            else:
                self.more = False
        except AGIHangup:
            self._caller_left(f"caller hung up {HUNG_UP_WHILE[self.stage]}")
        except ProviderError as exc:
            self._failed(f"{self.stage}_error", self.stage, exc)
        except AudioError as exc:
            self._failed("stt_error" if self.stage == "stt" else "tts_error", self.stage, exc)
        except VoiceAssistError as exc:  # ConfigError and friends
            if isinstance(exc, ConfigError):
                self.more = False  # every later question would meet the same broken setting
            self._failed("error", self.stage, exc)
        except Exception as exc:  # a bug: log the traceback, still answer the caller
            logger.exception("[%s] %s unexpected error", self.stage.upper(), self.call.uniqueid)
            self._failed("error", self.stage, exc)
        finally:
            self.record.timings["total"] = self._elapsed_ms(self.started)
            self._store()
            self._cleanup()
            self._tell_dialplan()

    def _deadline_seconds(self) -> float:
        """``[general] turn_deadline`` counted from the end of the caller's speech (as the dialplan
        placed it), not from the start of this turn: finding the end of the question and starting
        the AGI have already used part of it. Up to MAX_DEADLINE_HEAD_START is taken off; more would
        be a clock that differs between Asterisk's host and ours, and the turn then counts from now."""
        seconds = self.config.section("general").get_float("turn_deadline")
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

    def _fallback_logger(self, tag: str):  # type: ignore[no-untyped-def]
        def on_failure(name: str, exc: Exception) -> None:
            self.log(tag, f"{name} failed, trying the next provider: {exc}", logging.WARNING)
        return on_failure

    # -- stages -------------------------------------------------------------------------------
    def _listen(self) -> str:
        general = self.config.section("general")
        if self.heard != "NOISE":
            raise _NoSpeech("the caller did not start talking")
        recording = read_recording(self.recording_path, general.get_float("max_question_seconds"))
        self.record.timings["recording"] = int(recording.seconds * 1000)
        if speech_frames(recording) < MIN_SPEECH_FRAMES:
            raise _NoSpeech("recording is silent")
        self.session.raise_if_hung_up()
        t0 = time.monotonic()
        transcript, self.record.stt_provider = self.assistant.providers("stt").call(
            lambda stt: stt.transcribe(recording), self._fallback_logger("STT"))
        self.record.timings["stt"] = self._elapsed_ms(t0)
        self.log("STT", f"{len(transcript.text)} chars in {self.record.timings['stt']} ms from "
                        f"{recording.seconds:.1f} s of audio by {self.record.stt_provider} "
                        f"(confidence {transcript.confidence})")
        if not transcript.text.strip():
            raise _NoSpeech("speech-to-text found no words")
        self.record.transcript = transcript.text
        self.record.stt_confidence = transcript.confidence
        return transcript.text

    def _history(self) -> list[Any]:
        try:
            return self.assistant.journal().history(self.call.uniqueid, self.call.channel)
        except Exception as exc:  # StorageError or a driver error: an unreachable database must not silence the caller
            self.log("DB", f"history unavailable, answering without it: {exc}", logging.WARNING)
            return []

    def _think(self, question: str) -> str:
        self.stage = "llm"
        history = self._history()
        self.session.raise_if_hung_up()
        t0 = time.monotonic()
        raw_reply, self.record.llm_provider = self.assistant.providers("llm").call(
            lambda llm: llm.reply(conversation_for(self.config, history, question, llm.max_fact_chars)),
            self._fallback_logger("LLM"))
        self.record.timings["llm"] = self._elapsed_ms(t0)
        reply = speakable(raw_reply)
        if not reply:
            raise ProviderBadResponse(f"{self.record.llm_provider}: nothing sayable in the reply {raw_reply[:80]!r}",
                                      provider=self.record.llm_provider)
        self.record.reply = reply
        self.log("LLM", f"{len(reply)} chars in {self.record.timings['llm']} ms by {self.record.llm_provider} "
                        f"(history {len(history)} turns)")
        return reply

    def _answer_path(self, part: int | None = None) -> Path:
        suffix = f"-part{part}" if part is not None else ""
        return (Path(self.config.section("general").get("answer_dir")) / _safe_name(self.call.uniqueid)
                / f"answer-{self.turn_number}{suffix}.ulaw")

    def _synthesize(self, text: str, destination: Path) -> None:
        """Text -> speech (fallback chain) -> μ-law file; adds to the tts/convert timings."""
        t0 = time.monotonic()
        speech, self.record.tts_provider = self.assistant.providers("tts").call(
            lambda tts: tts.synthesize(text), self._fallback_logger("TTS"))
        self.record.timings["tts"] = self.record.timings.get("tts", 0) + self._elapsed_ms(t0)
        audio = self.config.section("audio")
        t0 = time.monotonic()
        write_phone_audio(speech, destination, ffmpeg=audio.get("ffmpeg"),
                          gain_db=audio.get_float("volume_gain_db"), timeout=audio.get_float("timeout"),
                          in_process=audio.get("converter") != "ffmpeg")
        self.record.timings["convert"] = self.record.timings.get("convert", 0) + self._elapsed_ms(t0)

    def _speak(self, reply: str) -> None:
        """The design card's flow: one answer file, played by the dialplan's Playback."""
        self.stage = "tts"
        self.session.raise_if_hung_up()
        destination = self._answer_path()
        self._synthesize(reply, destination)
        self.record.answer_path = str(destination)
        self.mark_first_audio()
        self.log("TTS", f"answer by {self.record.tts_provider} in {self.record.timings['tts']} ms, "
                        f"converted in {self.record.timings['convert']} ms")
        self.session.raise_if_hung_up()
        self.answer_sound = str(destination.with_suffix(""))

    def _answer_pipelined(self, question: str) -> None:
        """Stream the reply, synthesize it sentence by sentence in a worker thread, and play each
        sentence (STREAM FILE) while the next one is being generated and synthesized."""
        self.stage = "llm"
        history = self._history()
        self.session.raise_if_hung_up()
        t0 = time.monotonic()

        def open_reply() -> Iterator[str]:  # in the worker: the caller's thread watches for a hang-up
            pieces, self.record.llm_provider = self.assistant.providers("llm").stream(
                lambda llm: _reply_pieces(llm, conversation_for(self.config, history, question, llm.max_fact_chars)),
                self._fallback_logger("LLM"))
            self.record.timings["llm_first"] = self._elapsed_ms(t0)
            self.log("LLM", f"first words in {self.record.timings['llm_first']} ms by {self.record.llm_provider} "
                            f"(history {len(history)} turns)")
            return pieces

        def synthesize(sentence: str, number: int) -> Path:
            path = self._answer_path(number)
            self._synthesize(sentence, path)
            return path

        def reply_done() -> None:
            self.record.timings["llm"] = self._elapsed_ms(t0)

        def first_audio() -> None:
            self.stage = "tts"
            self.mark_first_audio()
            # For the h extension: a hang-up from now on is "during the answer", as in file mode.
            self.session.set_variable("VA_STATE", "answering")

        pipeline = SentencePipeline(open_reply, synthesize, on_reply_done=reply_done, name=self.call.uniqueid)
        parts: list[Path] = []
        try:
            parts = pipeline.play(lambda path: self.session.stream_file(str(path.with_suffix(""))),
                                  self._caller_gone, first_audio)
        except AGIHangup:
            if not pipeline.playing:
                self.stage = "llm" if pipeline.stage == "llm" else "tts"
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
        self.log("TTS", f"{len(parts)} sentences by {self.record.tts_provider} played; first audio ready "
                        f"{self.record.timings.get('first_audio')} ms into the turn")
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

    # -- outcome ------------------------------------------------------------------------------
    def _failed(self, status: str, stage: str, exc: BaseException) -> None:
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
        self.record.status = "hangup"
        self.record.error = error[:2000]
        self.more = False
        self._discard_answer()

    def _caller_gone(self) -> bool:
        try:
            self.log.flush()
            return self.session.poll_hangup()
        except AGIError:
            return True

    def _discard_answer(self) -> None:
        if self.record.answer_path:
            try:
                os.unlink(self.record.answer_path)
            except OSError:
                pass
            self.record.answer_path = None
        self.answer_sound = ""

    def _store(self) -> None:
        try:
            outcome = self.assistant.journal().add_turn(self.call, self.record)
            if outcome == "duplicate":
                outcome = "duplicate (the call already has this turn; not stored again):"
            self.log("DB", f"{outcome} turn {self.turn_number} status {self.record.status} for caller "
                           f"{self.call.caller_number!r} {self.call.caller_name!r}",
                     logging.INFO if outcome == "stored" else logging.WARNING)
        except Exception as exc:
            self.log("DB", f"turn {self.turn_number} NOT stored: {exc}", logging.ERROR)

    def _cleanup(self) -> None:
        keep = self.config.section("general").get_bool("keep_recordings")
        if not keep and self.recording_path:
            try:
                os.unlink(self.recording_path)
            except OSError:
                pass

    def _tell_dialplan(self) -> None:
        if self.session.hung_up:
            return
        general = self.config.section("general")
        elapsed = time.time() - self.call_started
        more = (self.more and self.turn_number < general.get_int("max_turns")
                and elapsed < general.get_int("max_call_seconds"))
        limit = general.get_int("variable_max_chars")
        values: dict[str, Any] = {
            "VA_ANSWER": self.answer_sound,
            "VA_CONTINUE": "1" if more else "0",
            "VOICEASSIST_STATUS": self.record.status,
            "VOICEASSIST_TRANSCRIPT": (self.record.transcript or "")[:limit],
            "VOICEASSIST_REPLY": (self.record.reply or "")[:limit],
        }
        try:
            for name, value in values.items():
                self.session.set_variable(name, value)
        except AGIError as exc:
            logger.info("[AGI] %s could not set variables: %s", self.call.uniqueid, exc)


def _has_speech(recording_path: str) -> bool:
    """Whether the question being recorded at the hang-up holds any speech. The samples are read
    past the 44-byte header without trusting its sizes: MixMonitor may not have closed the file
    (and written them) yet when the ``h`` extension runs."""
    if not recording_path:
        return False
    try:
        with open(recording_path, "rb") as wav:
            pcm = wav.read(44 + 60 * 16000)[44:]
    except OSError:  # not recorded at all: nothing was asked
        return False
    return speech_frames(Recording(pcm=pcm)) >= MIN_SPEECH_FRAMES


def _end_call(session: AGISession, assistant: Assistant, request: HangupRequest) -> None:
    """The ``h`` extension: store a turn cut short while recording, and the call's end time."""
    state, turn_number = request.state, request.turn_number
    recording_path = str(request.recording) if request.recording else ""
    call = request.call.call_info()
    log = CallLog(session, call.uniqueid)
    try:
        journal = assistant.journal()
        if state == "recording" and turn_number > 0:
            if _has_speech(recording_path):
                journal.add_turn(call, TurnRecord(turn_number=turn_number, status="hangup",
                                                  error="caller hung up while asking",
                                                  recording_path=recording_path or None))
                if not assistant.config.section("general").get_bool("keep_recordings"):
                    Path(recording_path).unlink(missing_ok=True)
            else:
                # A caller who hangs up at "anything else?" asked nothing: not a turn (and not a
                # failed call), and the empty recording is not kept.
                turn_number -= 1
                if recording_path:
                    Path(recording_path).unlink(missing_ok=True)
        outcome = journal.end_call(call, state)
        log("DB", f"call ended (state {state}, {turn_number} turns), {outcome}")
    except Exception as exc:
        log("DB", f"call end NOT stored: {exc}", logging.ERROR)
        return
    if outcome == "stored" and len(journal.spool):
        # The database is back and the caller is gone: a good moment to replay what waited.
        journal.flush(wait=False)
