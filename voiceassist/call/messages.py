"""A message the caller left (``[actions] take_message = record``): transcribed and stored with the
call as a turn of its own, so the admin reads it with the call (``voiceassist calls``).

The dialplan records it after the assistant said it would take one; it comes here when the
recording ends (the ``message`` action) or, when the caller hangs up while speaking, from the
``h`` extension. Whatever happens (silence, a failing recogniser, a database that is down) the
message is stored with what is known: the recording is never thrown away for a failed transcript.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..audio.recording import read_recording, speech_frames
from ..errors import VoiceAssistError
from ..types import CallInfo, TurnRecord, TurnStatus
from .assistant import Assistant
from .call_events import announce
from .channel import CallLog
from .records import store_turn

# The turn's action for the message itself (the turn that offered to take it has "message").
LEFT_MESSAGE = "left_message"
# Fewer voiced 20 ms frames than this: the caller said nothing (the recording is not kept).
MIN_MESSAGE_FRAMES = 10
MAX_MESSAGE_SECONDS = 300.0


def store_message(assistant: Assistant, call: CallInfo, recording_path: str, turn_number: int, log: CallLog) -> bool:
    """Transcribe the message at ``recording_path`` and store it as turn ``turn_number``.
    Returns whether there was a message (a silent recording is deleted and not stored)."""
    record = TurnRecord(turn_number=turn_number, recording_path=recording_path, action=LEFT_MESSAGE)
    started = time.monotonic()
    try:
        recording = read_recording(recording_path, MAX_MESSAGE_SECONDS)
    except VoiceAssistError as exc:
        log("MSG", f"no message recorded: {exc}")
        return False
    if speech_frames(recording) < MIN_MESSAGE_FRAMES:
        log("MSG", f"the message is silent ({recording.seconds:.1f} s): not kept")
        Path(recording_path).unlink(missing_ok=True)
        return False
    record.timings["recording"] = int(recording.seconds * 1000)
    try:
        transcript, record.stt_provider = assistant.providers("stt").call(lambda stt: stt.transcribe(recording))
        record.transcript = transcript.text.strip() or None
        record.stt_confidence = transcript.confidence
        record.status = TurnStatus.OK if record.transcript else TurnStatus.NO_SPEECH
    except VoiceAssistError as exc:
        # The recording is kept: the admin can listen to what the recogniser could not read.
        record.status = TurnStatus.STT_ERROR
        record.error = f"{type(exc).__name__}: {exc}"[:2000]
        log("MSG", f"message not transcribed: {record.error}", logging.ERROR)
    record.timings["stt"] = record.timings["total"] = int((time.monotonic() - started) * 1000)
    store_turn(assistant, call, record, log)
    announce(assistant, "message.taken", call, via="record", turn_number=turn_number, transcript=record.transcript,
             seconds=round(recording.seconds, 1), status=record.status)
    log("MSG", f"message of {recording.seconds:.1f} s stored as turn {turn_number}")
    return True
