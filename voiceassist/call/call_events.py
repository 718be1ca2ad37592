"""What a call tells the admin's own systems, as webhook events (``[webhooks]``,
:mod:`voiceassist.events`): ``call.started``, ``turn.completed``, ``call.transferred``,
``message.taken`` and ``call.ended``, each with the call it belongs to.

Announcing never slows or fails the call: an event is a file written to the outbox (no network),
and any problem with it is logged. The FastAGI server's sender posts them as they come; a
process-AGI call's own events are posted from the ``h`` extension, after the caller has gone.
"""

from __future__ import annotations

from typing import Any

from ..logs import logger
from ..types import CallInfo, TurnRecord
from .assistant import Assistant

# Seconds the h extension of a process-AGI call spends posting what is due (the caller is gone).
HANGUP_DELIVERY_SECONDS = 5.0


def call_data(call: CallInfo) -> dict[str, str]:
    return {"uniqueid": call.uniqueid, "linkedid": call.linkedid, "caller_number": call.caller_number,
            "caller_name": call.caller_name, "extension": call.extension}


def turn_data(record: TurnRecord) -> dict[str, Any]:
    return {"turn_number": record.turn_number, "status": record.status, "transcript": record.transcript,
            "reply": record.reply, "error": record.error, "interrupted": record.interrupted,
            "heard_reply": record.heard_reply, "action": record.action, "action_target": record.action_target,
            "providers": {"stt": record.stt_provider, "llm": record.llm_provider, "tts": record.tts_provider},
            "timings_ms": dict(record.timings)}


def announce(assistant: Assistant, type: str, call: CallInfo, **data: Any) -> None:
    """Queue event ``type`` about ``call`` (nothing when webhooks are not configured)."""
    settings = assistant.config.webhooks
    if not settings.urls or type not in settings.events:
        return
    try:
        from ..events.webhooks import emit

        outbox = assistant.outbox()
        if outbox is not None:
            emit(settings, outbox, type, {"call": call_data(call), **data})
    except Exception as exc:  # an event is never worth the call
        logger.error("[EVENTS] %s %s not queued: %s", call.uniqueid, type, exc)


def deliver_after_hangup(assistant: Assistant) -> None:
    """Post what is due, within a few seconds (process AGI has no sender of its own running)."""
    settings = assistant.config.webhooks
    if not settings.urls:
        return
    try:
        from ..events.webhooks import WebhookSender

        outbox = assistant.outbox()
        if outbox is not None:
            report = WebhookSender(settings, outbox).deliver_due(HANGUP_DELIVERY_SECONDS)
            if report.errors:
                logger.warning("[EVENTS] delivery after the call: %s", "; ".join(report.errors)[:500])
    except Exception as exc:
        logger.error("[EVENTS] delivery after the call failed: %s", exc)
