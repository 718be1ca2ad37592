"""The dialplan contract: what ``extensions_custom.conf`` and the Python side must agree on.

One home for everything both sides use, so they cannot drift apart:

* the FastAGI address the dialplan dials (written into the installed block from ``[fastagi]``,
  never typed twice) and the doctor's ping route;
* the AGI arguments of each action (``turn``, ``hangup``, ``listen``), parsed into the typed,
  validated requests of :mod:`voiceassist.call.requests`;
* the channel variables we set (``VA_ANSWER``, ``VA_CONTINUE``, ``VA_STATE``, the listener's
  ``VA_HEARD``/``VA_SILENCE_WAITED``/``VA_DONE``, and ``VOICEASSIST_STATUS``/``TRANSCRIPT``/``REPLY``
  for the admin's own dialplan): a turn's outcome is written here and nowhere else;
* the defaults of the dialplan's ``VA_*`` settings that Python shares (a test reads them from
  ``extensions_custom.conf``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..audio.endpointing import EndpointSettings
from ..call.keys import KeyAction, key_map
from ..call.requests import (
    CALL_STATE,
    HEARD_STATES,
    MAX_CHANNEL_CHARS,
    MAX_EXTENSION_CHARS,
    MAX_LISTEN_SECONDS,
    MAX_MILLISECONDS,
    MAX_TURNS,
    CallIdentity,
    HangupRequest,
    MessageRequest,
    TurnRequest,
    call_file,
    channel_language,
    decimal,
    epoch,
    shown,
    text_value,
    validate_uniqueid,
    whole_number,
)
from ..config import Config
from ..errors import AGIError, RequestError
from ..logs import logger
from ..types import CallState
from .agi import AGISession

if TYPE_CHECKING:
    from ..call.actions import Action
    from ..call.turn import TurnOutcome

# The address written in the shipped extensions_custom.conf; `voiceassist install` replaces it
# with the configured one (fastagi_url) in the block it installs.
SHIPPED_FASTAGI_URL = "agi://127.0.0.1:4573/voiceassist"
FASTAGI_ROUTE = "voiceassist"
# The real-time conversation (asterisk/live.py): the dialplan's [voiceassist-live-flow].
LIVE_ROUTE = "voiceassist-live"
# `voiceassist doctor` asks the server this route; the server answers by setting PING_VARIABLE.
PING_ROUTE = "voiceassist/ping"
PING_VARIABLE = "VOICEASSIST_PING"


def fastagi_url(config: Config, route: str = FASTAGI_ROUTE) -> str:
    """The ``agi://`` URL the dialplan uses to reach ``voiceassist serve`` as configured:
    ``[fastagi] host``/``port``, plus ``?secret=`` when ``[fastagi] secret`` is set."""
    section = config.section("fastagi")
    host = section.get("host")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard bind is reached on loopback from this machine
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6, as Asterisk parses agi://[addr]:port
    url = f"agi://{host}:{section.get_int('port')}/{route}"
    secret = section.get("secret", "")
    return f"{url}?secret={quote(secret, safe='')}" if secret else url


SHIPPED_LIVE_URL = f"agi://127.0.0.1:4573/{LIVE_ROUTE}"
_SHIPPED_URL = re.compile(r"agi://127\.0\.0\.1:4573/(voiceassist(?:-live)?)(?=[,)])")


def with_configured_urls(dialplan: str, config: Config) -> str:
    """The shipped dialplan with each route's shipped FastAGI URL replaced by the configured one
    (:func:`fastagi_url`)."""
    return _SHIPPED_URL.sub(lambda match: fastagi_url(config, match.group(1)), dialplan)


def ping_reply(version: str) -> str:
    """The value the server gives :data:`PING_VARIABLE`: recognisably ours, with its version."""
    return f"voiceassist {version}"


# -- the dialplan's settings whose defaults Python shares ------------------------------------------
# extensions_custom.conf: Set(VA_GRACE_S=${IF($["${VA_GRACE_S}" = ""]?8:${VA_GRACE_S})}) and so on;
# the EAGI listener's own defaults (when the dialplan passes nothing) are the same values.
_LISTENER = EndpointSettings()
DIALPLAN_DEFAULTS = {
    "VA_GRACE_S": _LISTENER.grace_s,            # seconds the caller may take to start talking
    "VA_END_MS": _LISTENER.end_ms,              # ms without voice that end the question (vad)
    "VA_MAX_QUESTION_S": _LISTENER.max_s,       # seconds: the longest question
}

# -- the variables we set ----------------------------------------------------------------------------
CHANNEL_LANGUAGE = "CHANNEL(language)"  # the caller's language, when the first question told another
ANSWER = "VA_ANSWER"            # sound the dialplan plays next ("": none)
CONTINUE = "VA_CONTINUE"        # "1": offer another question; "0": goodbye
STATE = "VA_STATE"              # where the call is: what the h extension says was interrupted
HEARD = "VA_HEARD"              # the listener: NOISE, TIMEOUT or FAILED (record the other way)
SILENCE_WAITED = "VA_SILENCE_WAITED"  # the listener: ms of silence that ended the question
DONE = "VA_DONE"                # the listener answered the question itself (process AGI)
LIVE_END = "VA_LIVE_END"        # a real-time call: why it ended (hangup, ended, silence, limit, failed, dropped, busy, error)
LIVE_TURNS = "VA_LIVE_TURNS"    # ... and how many exchanges it had
# A real-time call's media id, set inheritable (``__``) so that the WebSocket channel Asterisk dials
# carries it into MEDIA_START; read by our media server, not by the dialplan.
MEDIA_ID = "VA_MEDIA_ID"
# An action after the answer ([voiceassist-action] in the dialplan): transfer, message or end_call,
# with its target (a transfer: context,extension,priority from [destinations]; a message: the
# mailbox), the destination's name, how long a transfer rings, and where a failed one goes.
ACTION = "VA_ACTION"
TARGET = "VA_TARGET"
TARGET_NAME = "VA_TARGET_NAME"
RING_S = "VA_RING_S"
FALLBACK = "VA_FALLBACK"
MESSAGE_MODE = "VA_MESSAGE"     # voicemail | record
# Keys on the phone while an answer or prompt plays ([voiceassist-keys]): the keys that stop it,
# what each does, the operator's target, and the last answer (for the repeat key).
KEYS = "VA_KEYS"
KEY_OPERATOR = "VA_KEY_OPERATOR"
KEY_REPEAT = "VA_KEY_REPEAT"
OPERATOR = "VA_OPERATOR"
LAST_ANSWER = "VA_LAST_ANSWER"
STATUS = "VOICEASSIST_STATUS"   # for the admin's own dialplan: the turn's status ...
TRANSCRIPT = "VOICEASSIST_TRANSCRIPT"  # ... what the caller said
REPLY = "VOICEASSIST_REPLY"     # ... and what the assistant answered


def tell_dialplan(session: AGISession, outcome: TurnOutcome, config: Config) -> None:
    """What the dialplan does after a turn: play ``VA_ANSWER``, then another question or goodbye."""
    if session.hung_up:
        return
    variable_max_chars = config.general.variable_max_chars
    # The caller speaks another configured language: the prompts and the next questions follow it.
    language = {CHANNEL_LANGUAGE: outcome.language} if outcome.language else {}
    _set(session, {ANSWER: outcome.answer, CONTINUE: "1" if outcome.more else "0", STATUS: outcome.status,
                   TRANSCRIPT: outcome.transcript[:variable_max_chars], REPLY: outcome.reply[:variable_max_chars],
                   LAST_ANSWER: outcome.last_answer, **action_variables(outcome.action, config), **language})


def action_variables(action: Action | None, config: Config) -> dict[str, str]:
    """The variables that send the call to ``[voiceassist-action]`` (``VA_ACTION`` empty: no
    action), and those its transfer and the keys use whatever the turn did. Every value comes from
    the configuration, never from the call: a transfer's target is a ``[destinations]`` entry
    (checked against DIALPLAN_TARGET when the config was loaded)."""
    settings = config.actions
    fallback = config.destinations.get(settings.fallback) if settings.fallback else None
    operator = config.destinations.get(settings.operator) if settings.operator else None
    keys = key_map(config)
    values = {RING_S: str(settings.ring_seconds), MESSAGE_MODE: settings.take_message,
              FALLBACK: fallback.target if fallback is not None else "",
              OPERATOR: operator.target if operator is not None else "", KEYS: "".join(keys),
              KEY_OPERATOR: next((k for k, a in keys.items() if a is KeyAction.OPERATOR), ""),
              KEY_REPEAT: next((k for k, a in keys.items() if a is KeyAction.REPEAT), "")}
    if action is None or not action.ends_conversation:
        return {ACTION: "", TARGET: "", TARGET_NAME: "", **values}
    return {ACTION: action.kind.value, TARGET: action.target, TARGET_NAME: action.name, **values}


def send_prompt(session: AGISession, prompt: str, status: str) -> None:
    """The call ends with ``prompt`` (busy, can't answer): nothing was asked of the providers."""
    _set(session, {ANSWER: prompt, CONTINUE: "0", STATUS: status})


def tell_live_end(session: AGISession, reason: str, turns: int, transcript: str = "", reply: str = "",
                  config: Config | None = None, action: Action | None = None) -> None:
    """How a real-time call ended, for the dialplan after the route (``error`` and ``busy``
    make it play the apology or the busy prompt; an action sends it to ``[voiceassist-action]``)."""
    if session.hung_up:
        return
    variable_max_chars = config.general.variable_max_chars if config is not None else 1000
    actions = action_variables(action, config) if config is not None else {}
    _set(session, {LIVE_END: reason, LIVE_TURNS: str(turns), TRANSCRIPT: transcript[:variable_max_chars],
                   REPLY: reply[:variable_max_chars], **actions})


# -- how Asterisk opens a real-time call's media connection -------------------------------------------
def give_media_id(session: AGISession, call_id: str) -> None:
    """Put the call's media id on its channel, for the channel Asterisk dials to inherit."""
    _set(session, {"__" + MEDIA_ID: call_id})


# Native formats of a channel (CHANNEL(audionativeformat)) that carry more than the 8 kHz phone band.
WIDEBAND_FORMATS = frozenset({"g722", "opus", "siren7", "siren14", "speex16", "speex32", "slin16", "slin24",
                              "slin32", "slin44", "slin48", "g719", "silk16", "silk24", "celt"})


def is_wideband(native_formats: str) -> bool:
    """Whether the call's own codec carries 16 kHz audio (``(g722)``, ``(opus|ulaw)`` ...)."""
    return any(name in WIDEBAND_FORMATS for name in re.split(r"[^a-z0-9]+", native_formats.lower()))


def websocket_connection(name: str, worker: int) -> str:
    """The websocket_client.conf section that reaches worker ``worker`` of ``serve`` with
    ``[fastagi] workers`` processes (each worker's media server listens on ``websocket_port`` plus
    its number, and a call's media must reach the worker that holds its control session):
    ``name`` for worker 0, ``name-<worker>`` for the others. ``voiceassist install`` writes one
    section per worker."""
    return name if worker == 0 else f"{name}-{worker}"


def media_application(transport: str, call_id: str, host: str, port: int, *, wideband: bool,
                      websocket_client: str) -> tuple[str, str]:
    """The application (and its argument) the route EXECs to connect the call's audio to our
    media server; it returns when the media connection ends.

    * AudioSocket at 8 kHz: the AudioSocket application (``app_audiosocket``, Asterisk 18+);
    * AudioSocket at 16 kHz: ``Dial(AudioSocket/host:port/<id>/c(slin16))`` (``chan_audiosocket``:
      only the channel driver negotiates another format);
    * WebSocket: ``Dial(WebSocket/<websocket_client.conf section>/c(slin16)f(json)v(call=<id>))``
      (``chan_websocket``; the id rides in the URI and is confirmed by MEDIA_START).
    """
    if not re.fullmatch(r"[0-9a-f]{32}", call_id):
        raise RequestError(f"media call id {shown(call_id)} is not ours")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if transport == "audiosocket":
        uuid = f"{call_id[:8]}-{call_id[8:12]}-{call_id[12:16]}-{call_id[16:20]}-{call_id[20:]}"
        if wideband:
            return "Dial", f"AudioSocket/{address}/{uuid}/c(slin16)"
        return "AudioSocket", f"{uuid},{address}"
    if transport == "websocket":
        codec = "slin16" if wideband else "slin"
        return "Dial", f"WebSocket/{websocket_client}/c({codec})f(json)v(call={call_id})"
    raise RequestError(f"unknown media transport {shown(transport)}")


def set_call_state(session: AGISession, state: CallState) -> None:
    _set(session, {STATE: state.value})


def listener_heard(session: AGISession, heard: str, silence_waited_ms: int) -> None:
    _set(session, {HEARD: heard, SILENCE_WAITED: str(silence_waited_ms)})


def listener_failed(session: AGISession) -> None:
    """The listener could not listen: the dialplan records this question the design card's way."""
    _set(session, {HEARD: "FAILED"})


def answered_by_listener(session: AGISession) -> None:
    """The listener answered the question itself: the dialplan skips ``AGI(turn)``."""
    _set(session, {DONE: "1"})


def _set(session: AGISession, values: Mapping[str, str]) -> None:
    try:
        for name, value in values.items():
            session.set_variable(name, value)
    except AGIError as exc:  # the channel is gone (the h extension) or the connection with it
        logger.info("[AGI] %s could not set variables: %s", session.env.get("agi_uniqueid", "?"), exc)


# -- the requests ----------------------------------------------------------------------------------
def parse_call(env: Mapping[str, str], extension: str = "", linkedid: str = "") -> CallIdentity:
    """The call's identity, validated. Caller ID is kept as text (it is only stored, and the
    journal makes any text storable); ``unknown`` (Asterisk's "not set") becomes empty."""
    def caller(key: str) -> str:
        value = env.get(key, "")
        return "" if value == "unknown" else value

    return CallIdentity(
        uniqueid=validate_uniqueid(env.get("agi_uniqueid", ""), "agi_uniqueid"),
        channel=text_value(env.get("agi_channel", ""), "agi_channel", MAX_CHANNEL_CHARS, required=True),
        caller_number=caller("agi_callerid"),
        caller_name=caller("agi_calleridname"),
        extension=text_value(extension or env.get("agi_extension", ""), "extension", MAX_EXTENSION_CHARS),
        linkedid=validate_uniqueid(linkedid, "linkedid") if linkedid else "",
        language=channel_language(env.get("agi_language", "")),
    )


def _argument(args: Sequence[str], index: int) -> str:
    return args[index] if len(args) > index else ""


def parse_turn(env: Mapping[str, str], args: Sequence[str], answer_dir: str) -> TurnRequest:
    """The ``turn`` action's arguments (those after ``turn``), validated."""
    call = parse_call(env, _argument(args, 4), _argument(args, 5))
    heard = (_argument(args, 1) or "NOISE").upper()
    if heard not in HEARD_STATES:
        raise RequestError(f"heard {shown(heard)} is not one of {', '.join(sorted(HEARD_STATES))}")
    started = _argument(args, 3)
    stopped = _argument(args, 6)
    return TurnRequest(
        call=call,
        recording=call_file(_argument(args, 0), answer_dir, call.uniqueid),
        heard=heard,
        turn_number=whole_number(_argument(args, 2), "turn number", 1, MAX_TURNS, default=1),
        call_started=epoch(started, "call start") if started else time.time(),
        recording_stopped=epoch(stopped, "recording stop") if stopped else None,
        silence_waited_ms=whole_number(_argument(args, 7), "silence waited (ms)", 0, MAX_MILLISECONDS, default=0),
    )


@dataclass(frozen=True)
class LiveRequest:
    """``AGI(agi://host:port/voiceassist-live,<exten>,<linkedid>[,<turns before>])``: hold a
    real-time conversation. ``turns_before``: exchanges the call already had (a conversation
    that resumes after a transfer nobody answered numbers its turns on from there)."""

    call: CallIdentity
    turns_before: int = 0


def parse_live(env: Mapping[str, str], args: Sequence[str]) -> LiveRequest:
    return LiveRequest(call=parse_call(env, _argument(args, 0), _argument(args, 1)),
                       turns_before=whole_number(_argument(args, 2), "turns before", 0, MAX_TURNS, default=0))


def parse_hangup(env: Mapping[str, str], args: Sequence[str], answer_dir: str) -> HangupRequest:
    """The ``hangup`` action's arguments (those after ``hangup``), validated."""
    call = parse_call(env, _argument(args, 3), _argument(args, 4))
    state = _argument(args, 0) or "idle"
    if not CALL_STATE.fullmatch(state):
        raise RequestError(f"call state {shown(state)} is not a lower-case word")
    recording = None
    if state in (CallState.RECORDING, CallState.MESSAGE) and _argument(args, 1):
        recording = call_file(_argument(args, 1), answer_dir, call.uniqueid)
    return HangupRequest(call=call, state=state, recording=recording,
                         turn_number=whole_number(_argument(args, 2), "turn number", 0, MAX_TURNS, default=0),
                         target_name=text_value(_argument(args, 5), "target name", MAX_EXTENSION_CHARS),
                         target=text_value(_argument(args, 6), "target", MAX_CHANNEL_CHARS))


@dataclass(frozen=True)
class ListenRequest:
    """``EAGI(voiceassist,listen,<wav>,<grace_s>,<end_ms>,<max_s>[,answer,<turn>,<start>,<exten>,<linkedid>])``:
    record the question into ``recording`` until the caller stops talking, and with ``answer``
    answer it too (process AGI). ``None`` settings keep the listener's defaults."""

    call: CallIdentity
    recording: Path
    grace_s: float | None = None
    end_ms: int | None = None
    max_s: float | None = None
    answer: bool = False
    turn_number: int = 1
    call_started: float = 0.0

    def turn(self, heard: str, recording_stopped: float, silence_waited_ms: int) -> TurnRequest:
        """The turn on the question this listener recorded."""
        return TurnRequest(call=self.call, recording=self.recording, heard=heard, turn_number=self.turn_number,
                           call_started=self.call_started, recording_stopped=recording_stopped,
                           silence_waited_ms=silence_waited_ms)


def parse_listen(env: Mapping[str, str], args: Sequence[str], answer_dir: str) -> ListenRequest:
    """The ``listen`` action's arguments (those after ``listen``), validated."""
    call = parse_call(env, _argument(args, 7), _argument(args, 8))
    answer = _argument(args, 4)
    if answer not in ("", "answer"):
        raise RequestError(f"listen mode {shown(answer)} is not 'answer' or empty")
    grace, end, longest, started = (_argument(args, i) for i in (1, 2, 3, 6))
    return ListenRequest(
        call=call,
        recording=call_file(_argument(args, 0), answer_dir, call.uniqueid),
        grace_s=decimal(grace, "grace (s)", 0, MAX_LISTEN_SECONDS) if grace else None,
        end_ms=whole_number(end, "end of question (ms)", 1, MAX_MILLISECONDS) if end else None,
        max_s=decimal(longest, "longest question (s)", 0, MAX_LISTEN_SECONDS) if longest else None,
        answer=answer == "answer",
        turn_number=whole_number(_argument(args, 5), "turn number", 1, MAX_TURNS, default=1),
        call_started=epoch(started, "call start") if started else time.time(),
    )


def parse_message(env: Mapping[str, str], args: Sequence[str], answer_dir: str) -> MessageRequest:
    """The ``message`` action's arguments (those after ``message``), validated."""
    call = parse_call(env, _argument(args, 2), _argument(args, 3))
    return MessageRequest(call=call, recording=call_file(_argument(args, 0), answer_dir, call.uniqueid),
                          turn_number=whole_number(_argument(args, 1), "turn number", 0, MAX_TURNS, default=0))


def parse_request(env: Mapping[str, str], args: Sequence[str],
                  answer_dir: str) -> TurnRequest | HangupRequest | MessageRequest:
    """Dispatch on the first AGI argument: ``turn`` (the default), ``hangup`` or ``message``.
    ``listen`` is EAGI's (process AGI only: Asterisk refuses EAGI over agi://), parsed by
    :func:`parse_listen`."""
    action = args[0] if args else "turn"
    if action == "turn":
        return parse_turn(env, args[1:], answer_dir)
    if action == "hangup":
        return parse_hangup(env, args[1:], answer_dir)
    if action == "message":
        return parse_message(env, args[1:], answer_dir)
    raise RequestError(f"unknown action {shown(action)} (turn, hangup or message)")
