"""The end of a call: what is stored when the caller has gone (the ``h`` extension's request).

A question the caller was still asking when they hung up is stored as a turn cut short; a caller
who hung up at "anything else?" asked nothing more, and that is not a turn.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..audio.recording import speech_frames
from ..types import CallInfo, CallState, Recording, TurnRecord, TurnStatus
from .assistant import Assistant
from .call_events import announce
from .channel import CallChannel, CallLog
from .mail import mail_about_call
from .messages import store_message
from .summary import summarize
from .requests import HangupRequest
from .turn import MIN_SPEECH_FRAMES


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


def announce_end(assistant: Assistant, call: CallInfo, state: str, turns: int, request: HangupRequest | None,
                 log: CallLog) -> None:
    """The events of a call's end (a transfer, a message left in a mailbox, the end itself with
    its summary), and the summary stored with the call."""
    if state == CallState.TRANSFERRED and request is not None:
        announce(assistant, "call.transferred", call, destination=request.target_name, target=request.target)
    if state == CallState.MESSAGE and request is not None and request.target_name == "voicemail":
        announce(assistant, "message.taken", call, via="voicemail", mailbox=request.target)
    summary = None
    if assistant.config.general.call_summary:
        try:
            exchanges = assistant.journal().history(call.uniqueid, call.channel)
        except Exception as exc:
            log("SUMMARY", f"no summary: the call's turns cannot be read: {exc}")
            exchanges = []
        summary = summarize(assistant, call, exchanges, log)
        if summary:
            try:
                journal = assistant.journal()
                summary = journal.redact(summary) or None  # [privacy] redact, as for the turns
                journal.store().set_summary(call.uniqueid, summary or "")
            except Exception as exc:
                log("SUMMARY", f"summary NOT stored: {exc}", logging.WARNING)
    announce(assistant, "call.ended", call, state=state, turns=turns, summary=summary)
    mailbox = request.target if request is not None and request.target_name == "voicemail" else ""
    mail_about_call(assistant, call, state, summary, mailbox, log)


def end_call(channel: CallChannel | None, assistant: Assistant, request: HangupRequest) -> None:
    """The call is over (the ``h`` extension): store a question cut short while it was being
    recorded, and the call's end time and state; replay the spool if the database is back."""
    assistant = assistant.in_language(request.call.language)  # the summary is in the call's language
    state, turn_number = request.state, request.turn_number
    recording_path = str(request.recording) if request.recording else ""
    call = request.call.call_info()
    log = CallLog(channel, call.uniqueid)
    try:
        journal = assistant.journal()
        if state == CallState.MESSAGE and recording_path:
            # The caller hung up while leaving a message (the usual way to end one).
            store_message(assistant, call, recording_path, turn_number + 1, log)
        elif state == CallState.RECORDING and turn_number > 0:
            if _has_speech(recording_path):
                journal.add_turn(call, TurnRecord(turn_number=turn_number, status=TurnStatus.HANGUP,
                                                  error="caller hung up while asking",
                                                  recording_path=recording_path or None))
                if not assistant.config.general.keep_recordings:
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
    announce_end(assistant, call, state, turn_number, request, log)
    if outcome == "stored" and len(journal.spool):
        # The database is back and the caller is gone: a good moment to replay what waited.
        journal.flush(wait=False)
