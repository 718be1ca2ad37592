"""E-mail about calls through the local mail server (FreePBX systems have one): a message the
caller left, and with ``[email] send = all`` every call's summary and conversation.

Sent once the caller has gone (from the end of the call), never while they wait; a mail server
that is down is logged and the call's records are unaffected (the webhooks have their own
outbox; e-mail is a convenience).
"""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from ..types import CallInfo
from .assistant import Assistant
from .channel import CallLog

LEFT_MESSAGE = "left_message"


def _one_line(text: str, limit: int = 200) -> str:
    """Text safe in a header: no line breaks or other control characters, cut."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()[:limit]


def mail_about_call(assistant: Assistant, call: CallInfo, state: str, summary: str | None,
                    mailbox: str, log: CallLog) -> bool:
    """Mail the call to ``[email] to`` if its settings ask for it; returns whether one was sent."""
    settings = assistant.config.email
    if not settings.to:
        return False
    try:
        _, turns = assistant.journal().store().call_rows(call.uniqueid)
    except Exception as exc:
        log("MAIL", f"not sent: the call's turns cannot be read: {exc}")
        return False
    messages = [t for t in turns if t.get("action") == LEFT_MESSAGE]
    voicemail = state == "message" and bool(mailbox) and not messages
    if settings.send == "messages" and not messages and not voicemail:
        return False
    mail = _compose(assistant, call, turns, messages, summary, mailbox if voicemail else "")
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout) as smtp:
            smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        log("MAIL", f"not sent to {', '.join(settings.to)}: {exc}")
        return False
    log("MAIL", f"sent to {', '.join(settings.to)}")
    return True


def _compose(assistant: Assistant, call: CallInfo, turns: list[dict[str, Any]], messages: list[dict[str, Any]],
             summary: str | None, mailbox: str) -> EmailMessage:
    settings = assistant.config.email
    caller = " ".join(p for p in (call.caller_name, f"<{call.caller_number}>" if call.caller_number else "") if p)
    caller = _one_line(caller) or "a withheld number"
    mail = EmailMessage()
    subject = "Message" if messages or mailbox else "Call"
    mail["Subject"] = _one_line(f"{settings.subject_prefix} {subject} from {caller}")
    mail["From"] = settings.sender
    mail["To"] = ", ".join(settings.to)
    mail["Date"] = formatdate(localtime=True)
    mail["Message-ID"] = make_msgid(domain="voiceassist.local")
    lines = [f"Caller: {caller}", f"Call: {call.uniqueid} (extension {call.extension or '-'})", ""]
    if summary:
        lines += ["Summary:", summary, ""]
    for message in messages:
        lines += ["The caller's message:", message.get("transcript") or "(not transcribed: listen to the recording)",
                  f"Recording: {message.get('recording_path') or '-'}", ""]
    if mailbox:
        lines += [f"The caller left a message in voicemail box {mailbox}.", ""]
    conversation = [t for t in turns if t.get("action") != LEFT_MESSAGE and (t.get("transcript") or t.get("reply"))]
    if conversation:
        lines.append("The conversation:")
        for turn in conversation:
            lines.append(f"  Caller:    {turn.get('transcript') or '-'}")
            lines.append(f"  Assistant: {turn.get('reply') or '-'}")
    mail.set_content("\n".join(lines) + "\n")
    return mail
