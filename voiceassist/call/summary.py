"""A call's summary and a caller's memory.

The summary: once the caller has gone, the chat model writes one or two sentences about the call
for the business's staff (``[general] call_summary``): stored with the call, sent with the
``call.ended`` event. The memory (``[memory] enabled``): what a caller's earlier calls were about
(their summaries, else their questions), found by caller number within ``[memory] days``, is given
to the model, so "it's me again about the boiler" makes sense. A withheld or anonymous number
matches nobody.
"""

from __future__ import annotations

import datetime as dt
import re

from ..deadline import turn_deadline
from ..errors import VoiceAssistError
from ..text.speakable import speakable
from ..types import CallInfo, Conversation, Exchange
from .assistant import Assistant
from .channel import CallLog

SUMMARY_INSTRUCTIONS = (
    "You write notes for a business's staff. Summarise the phone call below in one or two short sentences: "
    "who called if known, what they wanted, and what the assistant answered or arranged. Plain text only.")
# Seconds the summary may take (the caller has gone; the h extension waits for it).
SUMMARY_SECONDS = 10.0
MAX_SUMMARY_CHARS = 600
MEMORY_HEADING = "EARLIER CALLS FROM THIS CALLER (use them only if the caller refers to them):\n"
# Numbers that do not identify a caller (withheld, anonymous, unknown, or no digits at all).
_NOT_A_CALLER = re.compile(r"(?i)(anonymous|unknown|restricted|private|withheld|unavailable|0+)?")


def summarize(assistant: Assistant, call: CallInfo, exchanges: list[Exchange], log: CallLog) -> str | None:
    """The call's summary by the chat model (None: nothing was said, or the model failed: logged)."""
    if not exchanges:
        return None
    lines = [f"Caller: {e.question}\nAssistant: {e.answer}" for e in exchanges]
    who = f"The caller's number: {call.caller_number or 'withheld'}; name: {call.caller_name or 'not given'}.\n\n"
    conversation = Conversation(SUMMARY_INSTRUCTIONS, (), who + "\n".join(lines))
    try:
        with turn_deadline(SUMMARY_SECONDS):
            text, provider = assistant.providers("llm").call(lambda llm: llm.reply(conversation))
    except VoiceAssistError as exc:
        log("SUMMARY", f"no summary: {exc}")
        return None
    summary = " ".join(speakable(text).split())[:MAX_SUMMARY_CHARS]
    log("SUMMARY", f"{len(summary)} chars by {provider}")
    return summary or None


def remembers(caller_number: str) -> bool:
    """Whether ``caller_number`` can identify a caller again (never a withheld one)."""
    return bool(caller_number) and not _NOT_A_CALLER.fullmatch(caller_number.strip()) \
        and sum(ch.isdigit() for ch in caller_number) >= 3


def recall(assistant: Assistant, call: CallInfo, log: CallLog) -> str:
    """What the caller's earlier calls were about, for the model's instructions ("": nothing, or
    [memory] is off, or the number is withheld)."""
    memory = assistant.config.memory
    if not memory.enabled or not remembers(call.caller_number):
        return ""
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=memory.days)
    try:
        earlier = assistant.journal().store().earlier_calls(call.caller_number, since, call.uniqueid, memory.calls)
    except Exception as exc:  # no memory is better than no answer
        log("MEMORY", f"earlier calls unavailable: {exc}")
        return ""
    if not earlier:
        return ""
    log("MEMORY", f"{len(earlier)} earlier calls from this number")
    return MEMORY_HEADING + "\n".join(f"- {started:%Y-%m-%d}: {about}" for started, about in earlier)
