"""What a call asks voiceassist to do, once every value in it has been checked.

Everything in a request comes from outside: the AGI arguments and environment are written by
whoever connects to the FastAGI port (or, through Asterisk, partly by the caller: the caller ID),
a media connection's announcement likewise. So every value is validated before it names a file
or a record:

* the uniqueid must look like Asterisk's (``[systemname-]epoch.sequence``; ``voiceassist ask``
  uses ``ask-<epoch>.<pid>``): it names the call's directory and its database row;
* a file (the recording) must resolve, links followed, inside this call's own directory
  ``<[general] answer_dir>/<uniqueid>/``: nothing elsewhere is read or deleted;
* numbers are plain decimals within bounds (no ``nan``, ``inf``, signs, exponents or absurd sizes).

A value that fails raises :class:`~voiceassist.errors.RequestError`; nothing is run on it. How
each wire spells a request (the AGI arguments' order) is the wire's business:
:mod:`voiceassist.asterisk.dialplan`.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import RequestError
from ..types import CallInfo

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
CALL_STATE = re.compile(r"[a-z][a-z_-]{0,19}", re.ASCII)


def shown(value: str) -> str:
    """A value for the log: quoted, cut, control characters visible."""
    return repr(value[:60] + ("..." if len(value) > 60 else ""))


def validate_uniqueid(value: str, what: str = "uniqueid") -> str:
    """``value`` if it is an Asterisk uniqueid (it names the call's directory and record)."""
    if len(value) > MAX_UNIQUEID_CHARS or not _UNIQUEID.fullmatch(value):
        raise RequestError(f"{what} {shown(value)} is not an Asterisk uniqueid ([systemname-]epoch.sequence)")
    return value


def text_value(value: str, what: str, max_chars: int, *, required: bool = False) -> str:
    if required and not value:
        raise RequestError(f"{what} is missing")
    if len(value) > max_chars or _CONTROL.search(value):
        raise RequestError(f"{what} {shown(value)} is not one line of at most {max_chars} characters")
    return value


def whole_number(value: str, what: str, low: int, high: int, default: int | None = None) -> int:
    if value == "" and default is not None:
        return default
    if not _INTEGER.fullmatch(value) or not low <= int(value) <= high:
        raise RequestError(f"{what} {shown(value)} is not a whole number from {low} to {high}")
    return int(value)


def decimal(value: str, what: str, low: float, high: float) -> float:
    """A plain decimal (no sign, exponent, nan or inf) with ``low < value <= high``."""
    if _DECIMAL.fullmatch(value) and low < float(value) <= high:
        return float(value)
    raise RequestError(f"{what} {shown(value)} is not a number above {low:g} and at most {high:g}")


def epoch(value: str, what: str) -> float:
    return decimal(value, what, *EPOCH_RANGE)


# Asterisk's channel language (agi_language, CHANNEL(language)): en, de, de_DE, es-419, pt_BR.
_CHANNEL_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8}){0,3}", re.ASCII)


def channel_language(value: str) -> str:
    """The channel's language if it looks like one, else "" (the config's main language serves the
    call: an odd language is no reason to refuse a caller)."""
    return value if len(value) <= 40 and _CHANNEL_LANGUAGE.fullmatch(value) else ""


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
    text_value(value, what, MAX_PATH_CHARS, required=True)
    if not os.path.isabs(value):
        raise RequestError(f"{what} {shown(value)} is not an absolute path")
    directory = call_directory(answer_dir, uniqueid)
    resolved = Path(os.path.realpath(value))
    if resolved.parent != directory and directory not in resolved.parents:
        raise RequestError(f"{what} {shown(value)} is not inside this call's directory {directory}")
    if resolved.suffix != ".wav":
        raise RequestError(f"{what} {shown(value)} is not a .wav file")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        return resolved  # not recorded (yet): reading it fails later as a missing recording
    except OSError as exc:
        raise RequestError(f"{what} {shown(value)} cannot be examined: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise RequestError(f"{what} {shown(value)} is not a regular file")  # a FIFO would block the read
    return resolved


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
    language: str = ""  # the channel's language ("" when unknown): picks the configured language

    def call_info(self) -> CallInfo:
        return CallInfo(uniqueid=self.uniqueid, linkedid=self.linkedid, channel=self.channel,
                        caller_number=self.caller_number, caller_name=self.caller_name,
                        extension=self.extension)


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


@dataclass(frozen=True)
class MessageRequest:
    """``AGI(...,message,<recording>,<turn>,<exten>,<linkedid>)``: the caller left a message
    (recorded by the dialplan in this call's directory), to transcribe and store with the call."""

    call: CallIdentity
    recording: Path
    turn_number: int = 0


@dataclass(frozen=True)
class HangupRequest:
    """``AGI(...,hangup,<state>,<recording>,<turn>,<exten>,<linkedid>)`` from the ``h`` extension:
    how the call ended. ``recording`` is the question (or the message) being recorded when the
    caller hung up (only when ``state`` is ``recording`` or ``message``; otherwise the argument is
    never used and ignored)."""

    call: CallIdentity
    state: str = "idle"
    recording: Path | None = None
    turn_number: int = 0
    # After an action ([voiceassist-action]): the destination's name and its target (a transfer),
    # or the mailbox (a message to voicemail). Text for the records only: nothing is run on it.
    target_name: str = ""
    target: str = ""
