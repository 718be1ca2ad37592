"""What an AGI session runs: the one dispatcher behind process AGI and every FastAGI route.

``AGI(voiceassist,<action>,...)`` (process AGI) and ``agi://host:port/voiceassist`` (FastAGI)
both come to :func:`serve_session`: the request is parsed and validated
(:mod:`voiceassist.asterisk.dialplan`), the turn or the end of the call runs on the session as a
:class:`~voiceassist.asterisk.channel.AGIChannel`, and the outcome goes back to the dialplan.
The doctor's ping route answers without touching anything; :func:`ping` is the doctor's side of it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from .. import __version__
from ..call.assistant import Assistant
from ..call.ending import end_call
from ..call.channel import CallLog
from ..call.messages import store_message
from ..call.requests import HangupRequest, MessageRequest
from ..call.turn import Turn
from ..errors import RequestError
from ..logs import logger
from .agi import ENVIRONMENT_KEYS, AGISession
from .channel import AGIChannel
from .dialplan import FASTAGI_ROUTE, PING_ROUTE, PING_VARIABLE, parse_request, ping_reply, send_prompt, tell_dialplan


def serve_session(session: AGISession, assistant: Assistant) -> None:
    """Run what the session asks (``turn``, the default, or ``hangup``) once every value of the
    request is validated; an invalid request gets the apology and nothing else."""
    general = assistant.config.general
    try:
        request = parse_request(session.env, session.arguments(), general.answer_dir)
    except RequestError as exc:
        refuse_request(session, general.prompts.rstrip("/"), exc)
        return
    channel = AGIChannel(session)
    if isinstance(request, HangupRequest):
        end_call(channel, assistant, request)
        return
    if isinstance(request, MessageRequest):
        call = request.call.call_info()
        store_message(assistant, call, str(request.recording), request.turn_number + 1, CallLog(channel, call.uniqueid))
        return
    outcome = Turn(channel, assistant, request).run()
    channel.flush()
    tell_dialplan(session, outcome, assistant.config)


def refuse_request(session: AGISession, prompts: str, error: RequestError) -> None:
    """An invalid request: nothing is run, read or deleted; the log says why (the values are
    shown quoted and cut); the caller hears the apology and the call ends."""
    logger.warning("[AGI] request refused (uniqueid %r, channel %r): %s", session.env.get("agi_uniqueid", "")[:80],
                   session.env.get("agi_channel", "")[:80], error.reason)
    send_prompt(session, f"{prompts}/cant-answer", "error")


def answer_ping(session: AGISession, assistant: Assistant) -> None:
    """The doctor's ping: prove this listener is voiceassist (and which version)."""
    session.set_variable(PING_VARIABLE, ping_reply(__version__))


Route = Callable[[AGISession, Assistant], None]
# FastAGI script names (the path of agi://host:port/<route>) and what they run.
ROUTES: dict[str, Route] = {FASTAGI_ROUTE: serve_session, PING_ROUTE: answer_ping}
# Routes that are not calls: no call slot is taken, no busy prompt is played.
CHECKS = frozenset({PING_ROUTE})


@dataclass(frozen=True)
class PingResult:
    ours: bool            # the server answered the ping route as voiceassist does
    detail: str           # its answer (name and version), or what happened instead
    local_address: str    # where the ping came from (what [fastagi] allow saw)
    silent: bool = False  # closed without a word: a peer outside allow (or a full server)


def ping(host: str, port: int, secret: str = "", timeout: float = 3.0) -> PingResult:
    """The doctor's side of the ping route: speak FastAGI as Asterisk does (the environment
    block, with the configured secret) and expect the server to set :data:`PING_VARIABLE`.

    Raises:
        OSError: nothing listens on ``host:port``.
    """
    script = PING_ROUTE + (f"?secret={quote(secret, safe='')}" if secret else "")
    values = {"agi_request": f"agi://{host}:{port}/{script}", "agi_channel": "voiceassist-doctor",
              "agi_type": "doctor", "agi_uniqueid": f"doctor-{int(time.time())}.{os.getpid()}",
              "agi_enhanced": "0.0", "agi_threadid": "0"}
    lines = ["agi_network: yes", f"agi_network_script: {script}",
             *(f"{key}: {values.get(key, '')}" for key in ENVIRONMENT_KEYS)]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        local = str(sock.getsockname()[0])
        sock.sendall(("\n".join(lines) + "\n\n").encode())
        with sock.makefile("rb") as replies:
            try:
                first = replies.readline(4096).decode("utf-8", "replace").rstrip("\n")
            except OSError as exc:
                return PingResult(False, f"did not answer the ping: {exc}", local)
            expected = f'SET VARIABLE "{PING_VARIABLE}" "'
            if first.startswith(expected) and first.endswith('"'):
                sock.sendall(b"200 result=1\n")
                return PingResult(True, first[len(expected):-1], local)
            if first == "FAILURE":
                return PingResult(False, "refused the ping: the secret does not match [fastagi] secret", local)
            if first == "":
                return PingResult(False, f"closed the connection from {local} without a word", local, silent=True)
            return PingResult(False, f"answered the ping with {first[:60]!r}: not voiceassist", local)
