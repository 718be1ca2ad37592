"""The live feed: what happens in calls, as it happens, for the web console (``[web] live_socket``).

Every process that serves calls (the FastAGI server's workers, the real-time server, each
process-AGI turn) *publishes* small JSON events to one Unix datagram socket; the console *listens*
on it. A datagram socket because a publisher must never wait or fail for the console: a send that
finds no listener, or a full queue, drops the event and the call goes on. Nothing here is
needed for durability: the turns themselves are stored by the journal.

Who may talk: the socket is made ``0660`` by the console (the service user), and every datagram
carries the sender's uid, which the kernel vouches for (``SO_PASSCRED``); the listener accepts only
root and its own user. An event's content is still call data (caller IDs, transcripts): the listener
checks its shape and size, and the console escapes every string it shows.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..logs import logger

# What a call tells the console. words: the caller's words so far (final or still a guess);
# reply: the assistant's reply as generated; provider.failed: one provider's error (the chain may
# have fallen back to the next).
EVENT_TYPES = ("call.started", "caller.words", "reply.words", "turn.completed", "provider.failed",
               "call.transferred", "message.taken", "call.ended", "transcript.words")
MAX_DATAGRAM = 16384
MAX_TEXT = 2000
UNIQUEID = re.compile(r"[0-9A-Za-z._-]{1,64}")
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _clip(value: Any, depth: int = 0) -> Any:
    """``value`` made small enough for one datagram: long strings cut, deep structures flattened."""
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if depth > 3:
        return None
    if isinstance(value, dict):
        return {str(k)[:64]: _clip(v, depth + 1) for k, v in list(value.items())[:40]}
    if isinstance(value, (list, tuple)):
        return [_clip(v, depth + 1) for v in value[:40]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)[:MAX_TEXT]


class LiveFeed:
    """Publishes events to the console's socket; never blocks, never raises."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.dropped = 0
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def publish(self, type: str, uniqueid: str, **data: Any) -> bool:
        """Send event ``type`` of call ``uniqueid``; False when it was dropped (no console, full)."""
        event = {"type": type, "call": uniqueid, "at": round(time.time(), 3), **_clip(data)}
        payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
        if len(payload) > MAX_DATAGRAM:
            self.dropped += 1
            return False
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.setblocking(False)
                sock = self._socket
            sock.sendto(payload, self.path)
            return True
        except OSError:  # no console (ENOENT, ECONNREFUSED), or its queue is full (EAGAIN)
            self.dropped += 1
            return False

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class LiveListener(threading.Thread):
    """The console's end: binds the socket and hands each acceptable event to ``deliver``."""

    def __init__(self, path: str | os.PathLike[str], deliver: Callable[[dict[str, Any]], None],
                 allowed_uids: set[int] | None = None) -> None:
        super().__init__(daemon=True, name="voiceassist-live-listener")
        self.path = Path(path)
        self.deliver = deliver
        self.allowed_uids = allowed_uids if allowed_uids is not None else {0, os.getuid()}
        self.refused = 0
        self.received = 0
        self._socket = self._bind()
        self._stopped = threading.Event()

    def _bind(self) -> socket.socket:
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            # A stale socket of an earlier console is replaced; anything else is not ours to remove.
            if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
                raise OSError(f"{self.path} exists and is not this user's socket: refusing to replace it")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old_umask = os.umask(0o117)  # created 0660: the service's group may send, nobody else
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(0.5)
        return sock

    def run(self) -> None:
        space = socket.CMSG_SPACE(_CREDENTIALS.size)
        while not self._stopped.is_set():
            try:
                payload, ancillary, _flags, _address = self._socket.recvmsg(MAX_DATAGRAM + 1, space)
            except socket.timeout:
                continue
            except OSError:
                if self._stopped.is_set():
                    return
                time.sleep(0.1)
                continue
            uid = _sender_uid(ancillary)
            if uid is None or uid not in self.allowed_uids:
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                    logger.warning("[WEB] live event from uid %s refused (%d so far)", uid, self.refused)
                continue
            event = parse_event(payload)
            if event is None:
                self.refused += 1
                continue
            self.received += 1
            try:
                self.deliver(event)
            except Exception as exc:  # one bad event never stops the feed
                logger.error("[WEB] live event not handled: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        self._socket.close()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.path.unlink()
        except OSError:
            pass


def _sender_uid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _CREDENTIALS.size:
            return int(_CREDENTIALS.unpack(data[:_CREDENTIALS.size])[1])
    return None


def parse_event(payload: bytes) -> dict[str, Any] | None:
    """The event in ``payload`` if it has the feed's shape, else None."""
    if len(payload) > MAX_DATAGRAM:
        return None
    try:
        event = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
        return None
    uniqueid = event.get("call")
    if not isinstance(uniqueid, str) or not UNIQUEID.fullmatch(uniqueid):
        return None
    if not isinstance(event.get("at"), (int, float)):
        event["at"] = time.time()
    return _clip(event)  # type: ignore[no-any-return]
