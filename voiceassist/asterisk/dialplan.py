"""The dialplan contract: what ``extensions_custom.conf`` and the Python side must agree on.

One home for the values both sides use, so they cannot drift apart: the FastAGI address the
dialplan dials (written into the installed block from ``[fastagi]``, never typed twice), and the
AGI arguments of each action, parsed into typed requests.

Everything in an AGI request comes from outside: the arguments and the environment are written by
whoever connects to the FastAGI port (or, through Asterisk, partly by the caller: the caller ID).
So every value is validated here, before it names a file or a record:

* the uniqueid must look like Asterisk's (``[systemname-]epoch.sequence``; ``voiceassist ask``
  uses ``ask-<epoch>.<pid>``): it names the call's directory and its database row;
* a file (the recording) must resolve, links followed, inside this call's own directory
  ``<[general] answer_dir>/<uniqueid>/``: nothing elsewhere is read or deleted;
* numbers are plain decimals within bounds (no ``nan``, ``inf``, signs, exponents or absurd sizes).

A value that fails raises :class:`~voiceassist.errors.RequestError`; the turn is not run on it.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..config import Config
from ..errors import RequestError
from ..types import CallInfo

# The address written in the shipped extensions_custom.conf; `voiceassist install` replaces it
# with the configured one (fastagi_url) in the block it installs.
SHIPPED_FASTAGI_URL = "agi://127.0.0.1:4573/voiceassist"
FASTAGI_ROUTE = "voiceassist"
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


def ping_reply(version: str) -> str:
    """The value the server gives :data:`PING_VARIABLE`: recognisably ours, with its version."""
    return f"voiceassist {version}"


# -- validation of single values -----------------------------------------------------------------
# Asterisk's uniqueid: "%li.%d" (epoch, sequence), prefixed by "<systemname>-" when asterisk.conf
# sets one. ASCII digits only ([0-9], not \d: int() and \d accept other scripts' digits too).
_UNIQUEID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,79}-)?[0-9]{1,20}\.[0-9]{1,10}", re.ASCII)
MAX_UNIQUEID_CHARS = 150  # AST_MAX_UNIQUEID
MAX_CHANNEL_CHARS = 200
MAX_EXTENSION_CHARS = 80
MAX_PATH_CHARS = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER = re.compile(r"[0-9]{1,9}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?", re.ASCII)
# Epoch seconds the dialplan passes (${EPOCH}, STRFTIME %s.%3q): 2000-01-01 to 2100-01-01.
EPOCH_RANGE = (946_684_800.0, 4_102_444_800.0)
MAX_TURNS = 1000
MAX_MILLISECONDS = 600_000            # silence waited, end of question: 10 minutes is absurd already
MAX_LISTEN_SECONDS = 3600.0
# WaitForNoise's WAITSTATUS and the listener's VA_HEARD.
HEARD_STATES = frozenset({"NOISE", "SILENCE", "TIMEOUT", "HANGUP"})
# VA_STATE: recording, thinking, answering, done (and an admin's own lower-case words).
_CALL_STATE = re.compile(r"[a-z][a-z_-]{0,19}", re.ASCII)


def _shown(value: str) -> str:
    """A value for the log: quoted, cut, control characters visible."""
    return repr(value[:60] + ("..." if len(value) > 60 else ""))


def validate_uniqueid(value: str, what: str = "uniqueid") -> str:
    """``value`` if it is an Asterisk uniqueid (it names the call's directory and record)."""
    if len(value) > MAX_UNIQUEID_CHARS or not _UNIQUEID.fullmatch(value):
        raise RequestError(f"{what} {_shown(value)} is not an Asterisk uniqueid ([systemname-]epoch.sequence)")
    return value


def _text(value: str, what: str, max_chars: int, *, required: bool = False) -> str:
    if required and not value:
        raise RequestError(f"{what} is missing")
    if len(value) > max_chars or _CONTROL.search(value):
        raise RequestError(f"{what} {_shown(value)} is not one line of at most {max_chars} characters")
    return value


def _integer(value: str, what: str, low: int, high: int, default: int | None = None) -> int:
    if value == "" and default is not None:
        return default
    if not _INTEGER.fullmatch(value) or not low <= int(value) <= high:
        raise RequestError(f"{what} {_shown(value)} is not a whole number from {low} to {high}")
    return int(value)


def _decimal(value: str, what: str, low: float, high: float) -> float:
    """A plain decimal (no sign, exponent, nan or inf) with ``low < value <= high``."""
    if _DECIMAL.fullmatch(value) and low < float(value) <= high:
        return float(value)
    raise RequestError(f"{what} {_shown(value)} is not a number above {low:g} and at most {high:g}")


def _epoch(value: str, what: str) -> float:
    return _decimal(value, what, *EPOCH_RANGE)


def call_directory(answer_dir: str | os.PathLike[str], uniqueid: str) -> Path:
    """This call's own directory: ``<answer_dir>/<uniqueid>``, with the answer directory's links
    resolved (what a file of the call must resolve into)."""
    return Path(os.path.realpath(answer_dir)) / validate_uniqueid(uniqueid)


def call_file(value: str, answer_dir: str | os.PathLike[str], uniqueid: str, what: str = "recording") -> Path:
    """The file ``value`` names, resolved (links followed), if it lies inside this call's own
    directory and is a ``.wav`` that is a regular file or does not exist yet.

    The resolved path is returned and used from then on, so the file checked is the file read or
    deleted: a link inside the call directory cannot lead the turn elsewhere.
    """
    _text(value, what, MAX_PATH_CHARS, required=True)
    if not os.path.isabs(value):
        raise RequestError(f"{what} {_shown(value)} is not an absolute path")
    directory = call_directory(answer_dir, uniqueid)
    resolved = Path(os.path.realpath(value))
    if resolved.parent != directory and directory not in resolved.parents:
        raise RequestError(f"{what} {_shown(value)} is not inside this call's directory {directory}")
    if resolved.suffix != ".wav":
        raise RequestError(f"{what} {_shown(value)} is not a .wav file")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        return resolved  # not recorded (yet): reading it fails later as a missing recording
    except OSError as exc:
        raise RequestError(f"{what} {_shown(value)} cannot be examined: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise RequestError(f"{what} {_shown(value)} is not a regular file")  # a FIFO would block the read
    return resolved


# -- the requests ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallIdentity:
    """Which call this is: from the AGI environment (uniqueid, channel, caller ID) and the
    dialplan's arguments (dialled extension, linkedid)."""

    uniqueid: str
    channel: str
    caller_number: str = ""
    caller_name: str = ""
    extension: str = ""
    linkedid: str = ""

    def call_info(self) -> CallInfo:
        return CallInfo(uniqueid=self.uniqueid, linkedid=self.linkedid, channel=self.channel,
                        caller_number=self.caller_number, caller_name=self.caller_name,
                        extension=self.extension)


def parse_call(env: Mapping[str, str], extension: str = "", linkedid: str = "") -> CallIdentity:
    """The call's identity, validated. Caller ID is kept as text (it is only stored, and the
    journal makes any text storable); ``unknown`` (Asterisk's "not set") becomes empty."""
    def caller(key: str) -> str:
        value = env.get(key, "")
        return "" if value == "unknown" else value

    return CallIdentity(
        uniqueid=validate_uniqueid(env.get("agi_uniqueid", ""), "agi_uniqueid"),
        channel=_text(env.get("agi_channel", ""), "agi_channel", MAX_CHANNEL_CHARS, required=True),
        caller_number=caller("agi_callerid"),
        caller_name=caller("agi_calleridname"),
        extension=_text(extension or env.get("agi_extension", ""), "extension", MAX_EXTENSION_CHARS),
        linkedid=validate_uniqueid(linkedid, "linkedid") if linkedid else "",
    )


def _argument(args: Sequence[str], index: int) -> str:
    return args[index] if len(args) > index else ""


@dataclass(frozen=True)
class TurnRequest:
    """``AGI(...,turn,<recording>,<heard>,<turn>,<call start>,<exten>,<linkedid>,<stopped>,<silence ms>)``:
    one question to answer.

    ``heard`` is WaitForNoise's WAITSTATUS (``NOISE`` when the caller started talking);
    ``recording_stopped`` (epoch seconds) and ``silence_waited_ms`` say when the caller stopped
    talking (the recording stopped that long after the silence began), when the dialplan passes them.
    """

    call: CallIdentity
    recording: Path
    heard: str = "NOISE"
    turn_number: int = 1
    call_started: float = 0.0
    recording_stopped: float | None = None
    silence_waited_ms: int = 0

    @property
    def speech_ended(self) -> float | None:
        """When the caller stopped talking (epoch seconds), if the dialplan said."""
        if self.recording_stopped is None:
            return None
        return self.recording_stopped - self.silence_waited_ms / 1000


def parse_turn(env: Mapping[str, str], args: Sequence[str], answer_dir: str) -> TurnRequest:
    """The ``turn`` action's arguments (those after ``turn``), validated."""
    call = parse_call(env, _argument(args, 4), _argument(args, 5))
    heard = (_argument(args, 1) or "NOISE").upper()
    if heard not in HEARD_STATES:
        raise RequestError(f"heard {_shown(heard)} is not one of {', '.join(sorted(HEARD_STATES))}")
    started = _argument(args, 3)
    stopped = _argument(args, 6)
    return TurnRequest(
        call=call,
        recording=call_file(_argument(args, 0), answer_dir, call.uniqueid),
        heard=heard,
        turn_number=_integer(_argument(args, 2), "turn number", 1, MAX_TURNS, default=1),
        call_started=_epoch(started, "call start") if started else time.time(),
        recording_stopped=_epoch(stopped, "recording stop") if stopped else None,
        silence_waited_ms=_integer(_argument(args, 7), "silence waited (ms)", 0, MAX_MILLISECONDS, default=0),
    )


@dataclass(frozen=True)
class HangupRequest:
    """``AGI(...,hangup,<state>,<recording>,<turn>,<exten>,<linkedid>)`` from the ``h`` extension:
    how the call ended. ``recording`` is the question being recorded when the caller hung up
    (only when ``state`` is ``recording``; otherwise the argument is never used and ignored)."""

    call: CallIdentity
    state: str = "idle"
    recording: Path | None = None
    turn_number: int = 0


def parse_hangup(env: Mapping[str, str], args: Sequence[str], answer_dir: str) -> HangupRequest:
    """The ``hangup`` action's arguments (those after ``hangup``), validated."""
    call = parse_call(env, _argument(args, 3), _argument(args, 4))
    state = _argument(args, 0) or "idle"
    if not _CALL_STATE.fullmatch(state):
        raise RequestError(f"call state {_shown(state)} is not a lower-case word")
    recording = None
    if state == "recording" and _argument(args, 1):
        recording = call_file(_argument(args, 1), answer_dir, call.uniqueid)
    return HangupRequest(call=call, state=state, recording=recording,
                         turn_number=_integer(_argument(args, 2), "turn number", 0, MAX_TURNS, default=0))


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
        raise RequestError(f"listen mode {_shown(answer)} is not 'answer' or empty")
    grace, end, longest, started = (_argument(args, i) for i in (1, 2, 3, 6))
    return ListenRequest(
        call=call,
        recording=call_file(_argument(args, 0), answer_dir, call.uniqueid),
        grace_s=_decimal(grace, "grace (s)", 0, MAX_LISTEN_SECONDS) if grace else None,
        end_ms=_integer(end, "end of question (ms)", 1, MAX_MILLISECONDS) if end else None,
        max_s=_decimal(longest, "longest question (s)", 0, MAX_LISTEN_SECONDS) if longest else None,
        answer=answer == "answer",
        turn_number=_integer(_argument(args, 5), "turn number", 1, MAX_TURNS, default=1),
        call_started=_epoch(started, "call start") if started else time.time(),
    )


def parse_request(env: Mapping[str, str], args: Sequence[str], answer_dir: str) -> TurnRequest | HangupRequest:
    """Dispatch on the first AGI argument: ``turn`` (the default) or ``hangup``. ``listen`` is
    EAGI's (process AGI only: Asterisk refuses EAGI over agi://), parsed by :func:`parse_listen`."""
    action = args[0] if args else "turn"
    if action == "turn":
        return parse_turn(env, args[1:], answer_dir)
    if action == "hangup":
        return parse_hangup(env, args[1:], answer_dir)
    raise RequestError(f"unknown action {_shown(action)} (turn or hangup)")
