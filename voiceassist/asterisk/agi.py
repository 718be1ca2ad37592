"""The AGI session: pyst2's ``AGI`` adapted to Python 3, to sockets, to threads and to hostile text.

pyst2 supplies the command vocabulary (``verbose``, ``set_variable``, ``get_variable``,
``stream_file`` ...). We replace the parts of it that break in production:

* ``__init__`` installs a SIGHUP handler (fails off the main thread) and writes debug text to
  stderr; our constructor does neither. Process AGI calls :meth:`AGISession.install_sighup_handler`
  from the main thread instead, because a script without a handler is killed by Asterisk's SIGHUP.
* ``send_command`` writes ``str``; we write UTF-8 bytes to any binary stream (a pipe or a socket).
* ``_quote`` neither escapes quotes and backslashes nor removes newlines, so text from callers or the
  LLM could end a command early and start another. Ours makes every argument one safe token.
* ``get_result`` crashes on the ``HANGUP`` line FastAGI sends, on EOF and on an empty ``result=``,
  and does not know 100, 511 or multi-line 520. Ours handles all of them.
* ``_get_agi_env`` takes any ``key: value`` line as a key. Asterisk sends values raw, so a caller
  ID holding ``\nagi_uniqueid: 1.1`` would override the real uniqueid. Ours takes a line as a key
  only where Asterisk's fixed order puts that key (see :data:`ENVIRONMENT_KEYS`).
* ``stream_file``, ``get_option``, ``get_data`` and ``send_image`` send the file name unquoted (a
  path with a space breaks the command); ours quote it.
"""

from __future__ import annotations

import os
import io
import re
import select
import signal
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from asterisk import agi as _pyst2

from ..errors import (
    AGIAppError,
    AGIConnectionClosed,
    AGIDeadChannel,
    AGIEnvironmentRefused,
    AGIHangup,
    AGIInvalidCommand,
    AGIProtocolError,
    AGIUsageError,
)

# What an AGI session reads and writes: a pipe (process AGI) or an unbuffered socket file (FastAGI).
Stream = IO[bytes] | io.RawIOBase

# Asterisk reads a command with fgets() into 8192 bytes (2048 before 20.16/22.6); the rest of a longer
# line would be parsed as a *second command*. We never send a line longer than the old limit.
MAX_COMMAND_BYTES = 2047
# Longest single text argument (VERBOSE message, variable value) before we cut it.
MAX_ARGUMENT_BYTES = 1800
# Longest line we accept from Asterisk; GET VARIABLE values are cut by Asterisk at 1023 bytes anyway.
MAX_RESPONSE_LINE = 64 * 1024
# The environment block is about 1 KB (up to ~20 KB with long arguments); anything far beyond is not Asterisk.
MAX_ENVIRONMENT_BYTES = 128 * 1024
# The keys of the environment block in the order Asterisk's setup_env() writes them (res_agi.c;
# the same in Asterisk 20 to 23). FastAGI writes "agi_network: yes" and, when the URL has a
# script part, "agi_network_script" before them; "agi_arg_1", "agi_arg_2" ... follow them.
ENVIRONMENT_KEYS = (
    "agi_request", "agi_channel", "agi_language", "agi_type", "agi_uniqueid", "agi_version",
    "agi_callerid", "agi_calleridname", "agi_callingpres", "agi_callingani2", "agi_callington",
    "agi_callingtns", "agi_dnid", "agi_rdnis", "agi_context", "agi_extension", "agi_priority",
    "agi_enhanced", "agi_accountcode", "agi_threadid",
)
# Values a turn relies on (with every agi_arg_N): a line break in one of them is refused. Only the
# caller ID can carry one from a real call; these never do unless the block was forged.
RELIED_ON_KEYS = ("agi_network_script", "agi_request", "agi_channel", "agi_uniqueid")
# Seconds to wait for the HANGUP notice / SIGHUP that follows a -1 result after a hangup.
HANGUP_NOTICE_WAIT = 0.1

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RESPONSE = re.compile(r"^(?P<code>\d{3})(?P<sep>[ -])(?P<rest>.*)$")
_RESULT = re.compile(
    r"^result=(?P<result>-?\d*)"
    r"(?: \((?P<data>.*)\))?"
    r"(?: endpos=(?P<endpos>-?\d+))?"
    r"(?: (?P<text>.*))?$"
)


def sanitize_text(value: object, max_bytes: int = MAX_ARGUMENT_BYTES) -> str:
    """Return ``value`` as one line of printable text that fits in ``max_bytes`` of UTF-8.

    Control characters (newlines included) become spaces; undecodable characters become U+FFFD.
    """
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    else:
        text = str(value)
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")  # drops lone surrogates
    text = _CONTROL_CHARS.sub(" ", text)
    encoded = text.encode("utf-8")
    if len(encoded) > max_bytes:
        text = encoded[:max_bytes].decode("utf-8", "ignore")
    return text


def _escape_within(text: str, budget: int) -> str:
    """``text`` with ``"`` and ``\\`` escaped for Asterisk's tokenizer, cut (never inside an
    escape or a character) so the result fits in ``budget`` bytes of UTF-8."""
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = "\\" + char if char in '"\\' else char
        size = len(piece.encode("utf-8"))
        if used + size > budget:
            break
        pieces.append(piece)
        used += size
    return "".join(pieces)


def quote_argument(value: object, max_bytes: int = MAX_ARGUMENT_BYTES) -> str:
    """Quote one AGI argument so Asterisk's tokenizer sees exactly one word with this text, in at
    most ``max_bytes`` bytes *after* escaping (text full of quotes or backslashes is cut to fit,
    so the command line stays within :data:`MAX_COMMAND_BYTES`).

    Asterisk's ``parse_args`` treats ``"`` as a quote toggle and ``\\`` as an escape; a newline ends
    the command whatever the quoting, so control characters are replaced first.
    """
    text = sanitize_text(value, max_bytes)  # escaping only lengthens: a first, cheap cut
    return '"' + _escape_within(text, max_bytes - 2) + '"'


def quote_path(path: object) -> str:
    """Quote a file name for a command (STREAM FILE ...). Unlike text it is never changed or cut
    (that would name another file): one with a control character, not UTF-8, or too long is refused."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if _CONTROL_CHARS.search(text):
        raise AGIProtocolError(f"file name {text[:80]!r} holds a control character: not sent to Asterisk")
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    try:
        size = len(quoted.encode("utf-8"))
    except UnicodeEncodeError:
        raise AGIProtocolError(f"file name {text[:80]!r} is not UTF-8: not sent to Asterisk") from None
    if size > MAX_ARGUMENT_BYTES:
        raise AGIProtocolError(f"file name {text[:80]!r}... is longer than {MAX_ARGUMENT_BYTES} bytes quoted")
    return quoted


class _Discard:
    """A write-only sink for pyst2's unconditional debug output."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        return None


class AGIResponse(dict):  # type: ignore[type-arg]
    """A parsed ``200`` line in pyst2's shape (``{'result': (value, data)}``) plus ``endpos``/``text``."""

    @property
    def result(self) -> str:
        return str(self["result"][0])

    @property
    def data(self) -> str:
        return str(self["result"][1])


class AGISession(_pyst2.AGI):  # type: ignore[misc]
    """One AGI conversation over binary streams: stdin/stdout (process AGI) or a socket (FastAGI).

    Args:
        reader: binary stream Asterisk writes to (``sys.stdin.buffer`` or ``socket.makefile('rb')``).
        writer: binary stream Asterisk reads from (``sys.stdout.buffer`` or the socket).
        read_environment: read the ``agi_*`` block now (default True).
        environment_seconds: the whole block must arrive within this (a client trickling one line
            at a time never trips a per-read timeout).
    """

    def __init__(self, reader: Stream, writer: Stream, *, read_environment: bool = True,
                 environment_seconds: float | None = None) -> None:
        # Deliberately not calling pyst2's __init__ (signal.signal + stderr noise); these are the
        # attributes its methods use.
        self.stdin = reader
        self.stdout = writer
        self.stderr = _Discard()
        self._got_sighup = False
        self._hangup_line_seen = False
        self._dead_channel = False
        self._closed = False
        self.env: dict[str, str] = {}
        if read_environment:
            self._get_agi_env(environment_seconds)

    # -- hangup state -------------------------------------------------------------------------
    def install_sighup_handler(self) -> bool:
        """Catch Asterisk's SIGHUP (process AGI) instead of dying. Only possible on the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(signal.SIGHUP, self._handle_sighup)
        return True

    @property
    def closed(self) -> bool:
        """True once the AGI stream failed or Asterisk closed it (no command can be sent)."""
        return self._closed

    @property
    def hung_up(self) -> bool:
        """True once Asterisk told us the caller is gone (SIGHUP, HANGUP line, 511 or EOF)."""
        return self._got_sighup or self._hangup_line_seen or self._dead_channel or self._closed

    def poll_hangup(self) -> bool:
        """Without blocking, consume a pending FastAGI ``HANGUP`` line; return :attr:`hung_up`."""
        if self.hung_up:
            return True
        try:
            fileno = self.stdin.fileno()
            readable, _, _ = select.select([fileno], [], [], 0)
        except (OSError, ValueError):
            return self.hung_up
        # select() cannot see bytes already in a Python buffer, so FastAGI reads its socket
        # unbuffered (see fastagi.py); process AGI learns of hangups through SIGHUP instead.
        if readable:
            line = self._readline()
            if line.strip() == "HANGUP":
                self._hangup_line_seen = True
            elif line:
                raise AGIProtocolError(f"unexpected line from Asterisk while idle: {line[:200]!r}")
        return self.hung_up

    def _await_hangup(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.poll_hangup():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                select.select([self.stdin.fileno()], [], [], min(remaining, 0.02))
            except (OSError, ValueError):
                time.sleep(min(remaining, 0.02))  # no fd (tests): SIGHUP may still arrive
        return True

    def raise_if_hung_up(self) -> None:
        """Raise :class:`AGIHangup` when the caller is gone."""
        if self.poll_hangup():
            raise AGIHangup("the caller hung up")

    # -- reading ------------------------------------------------------------------------------
    def _readline(self) -> str:
        try:
            raw = self.stdin.readline(MAX_RESPONSE_LINE + 1)
        except (ConnectionError, OSError) as exc:
            self._closed = True
            raise AGIConnectionClosed(f"AGI stream failed: {exc}") from None
        if not raw:
            self._closed = True
            return ""
        if not raw.endswith(b"\n"):
            if len(raw) > MAX_RESPONSE_LINE:
                raise AGIProtocolError(f"line from Asterisk longer than {MAX_RESPONSE_LINE} bytes")
            # EOF inside a line: "200 result=1" cut from "200 result=1 (data)" must not pass as a reply.
            self._closed = True
            raise AGIConnectionClosed(f"Asterisk closed the AGI connection mid-line: {raw[:80]!r}")
        return raw.rstrip(b"\n").decode("utf-8", "replace")

    def _get_agi_env(self, seconds: float | None = None) -> None:
        """Read the ``agi_*`` block up to its blank line, in Asterisk's fixed key order.

        Asterisk sends every value raw, so a caller ID that contains a newline spreads over
        several lines, and a line inside it may look like ``agi_uniqueid: 1.1``. A line is taken
        as a key only where the order puts that key next (:data:`ENVIRONMENT_KEYS`, then
        ``agi_arg_1``, ``agi_arg_2`` ...); any other line, a blank one included, continues the
        previous value; the block ends only at a blank line after ``agi_threadid`` or an argument.

        Raises:
            AGIEnvironmentRefused: a value the turn relies on holds a line break, or data waits
                right after the block (a complete forged block inside a caller ID, with the real
                rest of the block behind it).
            AGIProtocolError: not an environment block, or one too long or too slow.
            AGIConnectionClosed: the stream ended before the block did.
        """
        last_key = ""
        received = 0
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            line = self._readline()
            received += len(line) + 1
            if received > MAX_ENVIRONMENT_BYTES:
                raise AGIProtocolError(f"AGI environment longer than {MAX_ENVIRONMENT_BYTES} bytes")
            if deadline is not None and time.monotonic() > deadline:
                raise AGIProtocolError(f"AGI environment not complete within {seconds:g} s")
            if self._closed:
                where = "inside" if self.env else "before"
                raise AGIConnectionClosed(f"Asterisk closed the connection {where} the AGI environment")
            if line == "" and _may_end(last_key):
                break
            key, separator, value = line.partition(": ")
            if separator and key in _next_keys(last_key):
                self.env[key] = value
                last_key = key
            elif last_key:
                self.env[last_key] += "\n" + line
            else:
                raise AGIProtocolError(f"not an AGI environment line: {line[:80]!r}")
        for key in (*RELIED_ON_KEYS, *(k for k in self.env if k.startswith("agi_arg_"))):
            if "\n" in self.env.get(key, "") or "\r" in self.env.get(key, ""):
                # The URL's values may carry the FastAGI secret: named, not shown.
                shown = "" if key in ("agi_network_script", "agi_request") else f": {self.env[key][:80]!r}"
                raise AGIEnvironmentRefused(f"{key} holds a line break{shown}")
        self._refuse_data_after_environment()

    def _refuse_data_after_environment(self) -> None:
        """After the block Asterisk sends nothing until our first command, except ``HANGUP``. Data
        already waiting is the real rest of the block behind a forged one (a caller ID holding a
        blank line and made-up keys): refuse the session. Only readers with a file descriptor
        can be asked (select() sees the socket or pipe, so FastAGI and process AGI read them
        unbuffered)."""
        try:
            fileno = self.stdin.fileno()
        except (OSError, ValueError):
            return  # an in-memory stream (tests): nothing can be waiting that was not written before
        while select.select([fileno], [], [], 0)[0]:
            line = self._readline()
            if self._closed:
                return
            if line != "HANGUP":
                raise AGIEnvironmentRefused(f"data right after the AGI environment, before any command: "
                                            f"{line[:80]!r} (a forged environment block in the caller ID?)")
            self._hangup_line_seen = True

    def get_result(self, stdin: Any = None) -> AGIResponse:
        """Read Asterisk's answer to the command just sent (pyst2 hook, rewritten)."""
        while True:
            line = self._readline()
            if self._closed:
                raise AGIConnectionClosed("Asterisk closed the AGI connection")
            if line == "HANGUP":
                # FastAGI's notice; the real answer to our command follows (or already came).
                self._hangup_line_seen = True
                continue
            match = _RESPONSE.match(line)
            if not match:
                raise AGIProtocolError(f"unparsable AGI response: {line[:200]!r}")
            code, sep, rest = int(match["code"]), match["sep"], match["rest"]
            if code == 100:  # "100 result=0 Trying..." (GOSUB): the final answer follows
                continue
            if code == 200:
                return self._parse_200(rest, line)
            if code == 510:
                raise AGIInvalidCommand(rest)
            if code == 511:
                self._dead_channel = True
                raise AGIDeadChannel(rest)
            if code == 520:
                if sep == " ":
                    raise AGIUsageError(rest)
                usage = []
                while True:
                    more = self._readline()
                    if self._closed:
                        raise AGIConnectionClosed("Asterisk closed the connection inside a 520 usage block")
                    if more.startswith("520 "):
                        break
                    usage.append(more)
                raise AGIUsageError("\n".join(usage))
            raise AGIProtocolError(f"unknown AGI response code {code}: {line[:200]!r}")

    def _parse_200(self, rest: str, line: str) -> AGIResponse:
        match = _RESULT.match(rest)
        if not match:
            raise AGIProtocolError(f"unparsable 200 response: {line[:200]!r}")
        response = AGIResponse(result=(match["result"], match["data"] or ""))
        if match["endpos"] is not None:
            response["endpos"] = (match["endpos"], "")
        if match["text"]:
            response["text"] = (match["text"], "")
        if match["result"] == "-1":
            # After a hangup Asterisk sends the command's -1 first and the HANGUP notice (or SIGHUP)
            # right after it: give that notice a moment to arrive before calling it an app error.
            if match["data"] == "hangup" or self._await_hangup(HANGUP_NOTICE_WAIT):
                raise AGIHangup("the caller hung up during the command")
            error = AGIAppError(f"AGI command failed: {line[:200]}")
            error.response = response
            raise error
        return response

    # -- writing ------------------------------------------------------------------------------
    def _quote(self, string: object) -> str:  # pyst2 hook used by all its wrappers
        return quote_argument(string)

    # pyst2 sends these file names unquoted: one with a space would split the command.
    def stream_file(self, filename: object, escape_digits: object = "", sample_offset: int = 0) -> str:
        return str(super().stream_file(quote_path(filename), escape_digits, int(sample_offset)))

    def get_option(self, filename: object, escape_digits: object = "", timeout: int = 0) -> str:
        return str(super().get_option(quote_path(filename), escape_digits, int(timeout)))

    def get_data(self, filename: object, timeout: int = _pyst2.DEFAULT_TIMEOUT, max_digits: int = 255) -> str:
        return str(super().get_data(quote_path(filename), int(timeout), int(max_digits)))

    def send_image(self, filename: object) -> None:
        super().send_image(quote_path(filename))

    def send_command(self, command: str, *args: object) -> None:
        """Send one command line. Arguments must already be quoted (pyst2's wrappers do it)."""
        line = " ".join([command.strip(), *(str(a) for a in args)]).strip()
        if "\n" in line or "\r" in line:
            raise AGIProtocolError("refusing to send an AGI command containing a line break")
        data = line.encode("utf-8", "replace") + b"\n"
        if len(data) > MAX_COMMAND_BYTES:
            raise AGIProtocolError(f"AGI command of {len(data)} bytes exceeds the {MAX_COMMAND_BYTES}-byte limit")
        try:
            self.stdout.write(data)
            self.stdout.flush()
        except (BrokenPipeError, ConnectionError, OSError) as exc:
            self._closed = True
            raise AGIConnectionClosed(f"cannot write to Asterisk: {exc}") from None

    def execute(self, command: str, *args: object) -> AGIResponse:
        """Send a command and return its parsed answer (no preemptive SIGHUP check: dead-OK
        commands such as VERBOSE and SET VARIABLE still work after a hangup)."""
        self.send_command(command, *args)
        return self.get_result()

    # -- conveniences -------------------------------------------------------------------------
    def variable(self, name: str) -> str | None:
        """``GET VARIABLE``: the value, or None when unset (pyst2 cannot tell the two apart)."""
        response = self.execute("GET VARIABLE", quote_argument(name))
        return response.data if response.result == "1" else None

    def verbose(self, message: str, level: int = 1) -> None:
        """``VERBOSE``: a line on the Asterisk console and in its ``full`` log. Safe for any text."""
        self.execute("VERBOSE", quote_argument(message), int(level))

    def set_variable(self, name: str, value: object) -> None:
        """``SET VARIABLE`` with any text value (cut to one safe line)."""
        self.execute("SET VARIABLE", quote_argument(name, 200), quote_argument(value))

    def arguments(self) -> list[str]:
        """The AGI() arguments after the script: ``agi_arg_1``, ``agi_arg_2`` ..."""
        return list(_iter_args(self.env))


def _next_keys(last_key: str) -> tuple[str, ...]:
    """The keys Asterisk may send after ``last_key`` ("" at the start of the block)."""
    if last_key == "":
        return ("agi_network", "agi_request")  # FastAGI, or process AGI
    if last_key == "agi_network":
        return ("agi_network_script", "agi_request")  # the script line only when the URL has one
    if last_key == "agi_network_script":
        return ("agi_request",)
    if last_key == "agi_threadid":
        return ("agi_arg_1",)
    if last_key.startswith("agi_arg_"):
        return (f"agi_arg_{int(last_key[8:]) + 1}",)
    return (ENVIRONMENT_KEYS[ENVIRONMENT_KEYS.index(last_key) + 1],)


def _may_end(last_key: str) -> bool:
    """Whether a blank line after ``last_key`` ends the block (it does after the last fixed key
    and after an argument; anywhere else it is part of a value)."""
    return last_key == "agi_threadid" or last_key.startswith("agi_arg_")


def _iter_args(env: dict[str, str]) -> Iterator[str]:
    index = 1
    while f"agi_arg_{index}" in env:
        yield env[f"agi_arg_{index}"]
        index += 1
