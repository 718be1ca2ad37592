"""What a call tells the admin's own systems, as webhook events (``[webhooks]``,
:mod:`voiceassist.events`): ``call.started``, ``turn.completed``, ``call.transferred``,
``message.taken`` and ``call.ended``, each with the call it belongs to.

Announcing never slows or fails the call: an event is a file written to the outbox (no network),
and any problem with it is logged. The FastAGI server's sender posts them as they come; a
process-AGI call's own events are posted from the ``h`` extension, after the caller has gone.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from ..logs import logger
from ..types import CallInfo, TurnRecord
from .assistant import Assistant

# Seconds the h extension of a process-AGI call spends posting what is due (the caller is gone).
HANGUP_DELIVERY_SECONDS = 5.0
FACTS_HEADING = "ABOUT THE CALLER (from the business's records; use it, do not read it out):\n"
FACTS_FILE = "caller-facts.json"


def call_data(call: CallInfo) -> dict[str, str]:
    return {"uniqueid": call.uniqueid, "linkedid": call.linkedid, "caller_number": call.caller_number,
            "caller_name": call.caller_name, "extension": call.extension}


def turn_data(record: TurnRecord) -> dict[str, Any]:
    return {"turn_number": record.turn_number, "status": record.status, "transcript": record.transcript,
            "reply": record.reply, "error": record.error, "interrupted": record.interrupted,
            "heard_reply": record.heard_reply, "action": record.action, "action_target": record.action_target,
            "providers": {"stt": record.stt_provider, "llm": record.llm_provider, "tts": record.tts_provider},
            "language": record.language, "timings_ms": dict(record.timings)}


def tell_console(assistant: Assistant, type: str, call: CallInfo, **data: Any) -> None:
    """Tell the web console's live view (``[web] live_socket``); dropped when no console listens."""
    try:
        assistant.live_feed().publish(type, call.uniqueid, **data)
    except Exception as exc:  # the console is never worth the call
        logger.debug("[EVENTS] %s %s not told to the console: %s", call.uniqueid, type, exc)


class LiveWords:
    """One call's words for the console as they come: the caller's (a guess until final) and the
    assistant's reply as it is generated."""

    def __init__(self, assistant: Assistant, call: CallInfo) -> None:
        self.assistant = assistant
        self.call = call

    def caller(self, turn_number: int, text: str, final: bool) -> None:
        if text:
            tell_console(self.assistant, "caller.words", self.call, turn=turn_number, text=text, final=final)

    def reply(self, turn_number: int, text: str) -> None:
        if text:
            tell_console(self.assistant, "reply.words", self.call, turn=turn_number, text=text)

    def provider_failed(self, capability: str, provider: str, exc: BaseException) -> None:
        tell_console(self.assistant, "provider.failed", self.call, capability=capability, provider=provider,
                     kind=type(exc).__name__)


def announce(assistant: Assistant, type: str, call: CallInfo, **data: Any) -> None:
    """Queue event ``type`` about ``call`` for the webhooks (nothing when they are not configured),
    and tell the console."""
    tell_console(assistant, type, call, **({"from": call_data(call)} if type == "call.started" else {}), **data)
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


class CallerLookup:
    """The business's facts about the caller (``[webhooks] lookup_url``), asked in the background
    when the call starts, so the wait overlaps with the caller's first question. An AGI flow's
    later turns (other processes) read them from the call's directory (``cache``)."""

    def __init__(self, assistant: Assistant, call: CallInfo, cache: Path | None = None, *, ask: bool = True) -> None:
        self.settings = assistant.config.webhooks
        self.call = call
        self.cache = cache
        self._facts: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._until = time.monotonic() + self.settings.lookup_timeout + 0.1
        if not self.settings.lookup_url:
            return
        if not ask:
            self._facts = self._read_cache()
            return
        self._thread = threading.Thread(target=self._ask, daemon=True, name=f"voiceassist-lookup-{call.uniqueid}")
        self._thread.start()

    def _ask(self) -> None:
        from ..events.webhooks import look_up, new_event

        try:
            facts = look_up(self.settings, new_event("call.started", {"call": call_data(self.call)}))
        except Exception as exc:  # the call goes on without them
            logger.warning("[EVENTS] %s caller lookup failed: %s", self.call.uniqueid, exc)
            return
        self._facts = facts
        if facts and self.cache is not None:
            self._write_cache(facts)

    def _read_cache(self) -> dict[str, str]:
        if self.cache is None:
            return {}
        try:
            fd = os.open(self.cache, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                facts = json.loads(handle.read(64 * 1024))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in facts.items()} if isinstance(facts, dict) else {}

    def _write_cache(self, facts: dict[str, str]) -> None:
        assert self.cache is not None
        try:
            self.cache.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(self.cache, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(facts, handle)
        except OSError as exc:
            logger.warning("[EVENTS] %s caller facts not kept for later turns: %s", self.call.uniqueid, exc)

    def text(self) -> str:
        """The facts for the model's instructions ("": none), waiting at most until the lookup's
        time is up."""
        if self._thread is not None:
            self._thread.join(max(0.0, self._until - time.monotonic()))
        facts = dict(self._facts)
        if not facts:
            return ""
        lines = [f"{re.sub(r'[^A-Za-z0-9 _-]', '', key) or 'note'}: {value}" for key, value in facts.items()]
        return FACTS_HEADING + "\n".join(lines)
