"""Asterisk's manager interface (AMI), as much as the console needs: the calls in progress
(``CoreShowChannels``) and starting a channel that listens to one of them (``Originate``).

pyst2's manager waits on Asterisk without a timeout and cannot tell one action's answer from
another's, so this small client does: one connection per use, every read bounded by a
deadline, each answer matched to its ``ActionID``. Values sent are checked for line breaks (a
channel name from a page cannot add headers to an action).

``[web] manager``: ``ami://user:secret@host:port``, or ``freepbx`` (the manager login FreePBX keeps
in ``/etc/freepbx.conf``: ``AMPMGRUSER``, ``AMPMGRPASS``, on 127.0.0.1:5038).
"""

from __future__ import annotations

import itertools
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, VoiceAssistError

Message = dict[str, str]
MAX_MESSAGES = 10000  # a CoreShowChannels of a busy PBX is one event per channel
_ids = itertools.count(1)


class ManagerError(VoiceAssistError):
    """Asterisk's manager interface could not be reached, refused us, or refused an action."""


@dataclass(frozen=True)
class ManagerAddress:
    host: str
    port: int
    username: str
    secret: str


def manager_address(setting: str, freepbx_conf: Path = Path("/etc/freepbx.conf")) -> ManagerAddress:
    """``[web] manager`` as an address and login."""
    if setting.strip().lower() == "freepbx":
        from ..storage.freepbx import read_amp_conf

        values = read_amp_conf(freepbx_conf)
        if not values.get("AMPMGRUSER") or not values.get("AMPMGRPASS"):
            raise ConfigError(f"[web] manager = freepbx: no AMPMGRUSER/AMPMGRPASS in {freepbx_conf}")
        return ManagerAddress("127.0.0.1", 5038, values["AMPMGRUSER"], values["AMPMGRPASS"])
    parts = urlsplit(setting.strip())
    if parts.scheme != "ami" or not parts.hostname or not parts.username:
        raise ConfigError("[web] manager: ami://user:secret@host:port, or freepbx")
    return ManagerAddress(parts.hostname, parts.port or 5038, unquote(parts.username), unquote(parts.password or ""))


def _safe(value: str) -> str:
    if "\r" in value or "\n" in value or len(value) > 1000:
        raise ManagerError(f"refusing to send {value[:80]!r} to the manager interface")
    return value


class Manager:
    """One logged-in manager connection (a context manager: logs off and closes)."""

    def __init__(self, address: ManagerAddress, timeout: float = 5.0) -> None:
        self.timeout = timeout
        try:
            self._socket = socket.create_connection((address.host, address.port), timeout=timeout)
        except OSError as exc:
            raise ManagerError(f"cannot reach Asterisk's manager interface on {address.host}:{address.port}: "
                               f"{exc}") from None
        self._buffer = b""
        try:
            greeting = self._line(time.monotonic() + timeout)
            if "Asterisk Call Manager" not in greeting:
                raise ManagerError(f"{address.host}:{address.port} is not Asterisk's manager interface")
            answer = self.action("Login", Username=address.username, Secret=address.secret, Events="off")
            if answer[0].get("Response") != "Success":
                raise ManagerError(f"the manager interface refused the login of {address.username!r}: "
                                   f"{answer[0].get('Message', '')}")
        except BaseException:
            self._socket.close()
            raise

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self._send({"Action": "Logoff"})
        except (OSError, ManagerError):
            pass
        self._socket.close()

    # -- the wire -----------------------------------------------------------------------------------
    def _send(self, fields: Message) -> None:
        data = "".join(f"{key}: {_safe(value)}\r\n" for key, value in fields.items()) + "\r\n"
        self._socket.sendall(data.encode("utf-8"))

    def _line(self, deadline: float) -> str:
        while b"\r\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ManagerError("the manager interface did not answer in time")
            self._socket.settimeout(remaining)
            try:
                chunk = self._socket.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                raise ManagerError(f"the manager connection failed: {exc}") from None
            if not chunk:
                raise ManagerError("the manager interface closed the connection")
            self._buffer += chunk
            if len(self._buffer) > 1_000_000 and b"\r\n" not in self._buffer:
                raise ManagerError("the manager interface sent an overlong line")
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _message(self, deadline: float) -> Message:
        message: Message = {}
        while True:
            line = self._line(deadline)
            if not line:
                if message:
                    return message
                continue
            key, _, value = line.partition(":")
            message[key.strip()] = value.strip()

    def action(self, name: str, **fields: str) -> list[Message]:
        """Send action ``name``; its response, then (for a list) every event up to the list's end."""
        action_id = f"va-{next(_ids)}"
        self._send({"Action": name, "ActionID": action_id, **fields})
        deadline = time.monotonic() + self.timeout
        messages: list[Message] = []
        while len(messages) < MAX_MESSAGES:
            message = self._message(deadline)
            if message.get("ActionID") != action_id:
                continue  # an event or an answer not ours
            messages.append(message)
            if message.get("Response") == "Error":
                return messages
            if len(messages) == 1 and message.get("EventList") != "start":
                return messages
            if message.get("EventList") == "Complete":
                return messages
        raise ManagerError(f"{name}: more than {MAX_MESSAGES} messages")

    # -- what the console asks ----------------------------------------------------------------------
    def channels(self) -> list[Message]:
        """Every channel in progress (``CoreShowChannel`` events)."""
        answer = self.action("CoreShowChannels")
        if answer[0].get("Response") == "Error":
            raise ManagerError(f"CoreShowChannels refused: {answer[0].get('Message', '')}")
        return [m for m in answer[1:] if m.get("Event") == "CoreShowChannel"]

    def originate(self, channel: str, application: str, data: str, timeout_ms: int = 10000) -> None:
        """Start ``channel`` running ``application(data)`` (asynchronously: the call is placed)."""
        answer = self.action("Originate", Channel=channel, Application=application, Data=data,
                             Timeout=str(timeout_ms), Async="true")
        if answer[0].get("Response") != "Success":
            raise ManagerError(f"Originate {channel} refused: {answer[0].get('Message', '')}")
