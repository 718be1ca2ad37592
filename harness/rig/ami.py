"""A minimal Asterisk Manager Interface client for the tests: log in, collect events, wait on them."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Event = dict[str, str]


class AMIClient:
    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.settimeout(None)
        self.file = self.sock.makefile("rb")
        self.file.readline()  # "Asterisk Call Manager/x.y"
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.send({"Action": "Login", "Username": username, "Secret": secret, "Events": "on"})
        self.wait_for(lambda e: e.get("Response") in ("Success", "Error"), timeout=10)

    def send(self, fields: dict[str, str]) -> None:
        data = "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        self.sock.sendall(data.encode())

    def _read_loop(self) -> None:
        message: Event = {}
        try:
            for raw in self.file:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if message:
                        with self._cond:
                            self.events.append(message)
                            self._cond.notify_all()
                    message = {}
                    continue
                key, _, value = line.partition(": ")
                message[key] = value
        except OSError:
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise TimeoutError(f"no matching AMI event within {timeout} s")
                self._cond.wait(remaining)

    def close(self) -> None:
        try:
            self.send({"Action": "Logoff"})
            self.sock.close()
        except OSError:
            pass
