"""A scripted ThreadingHTTPServer: records requests, replays failures, else answers normally."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Fail:
    """Answer with an HTTP error status and the vendor's error JSON."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    """Say nothing for ``seconds`` (longer than the client's timeout), then close."""

    seconds: float = 5.0


@dataclass
class Garbage:
    """A 200 whose body is not what the SDK expects."""

    body: bytes = b"<html>502 bad gateway, but with status 200</html>"
    content_type: str = "application/json"


@dataclass
class Drop:
    """Close the connection without answering."""


@dataclass
class Cut:
    """Answer normally, but close the connection after the first chunk of the body (a stream
    that breaks mid-answer)."""


@dataclass
class Stream:
    """A streamed body: each chunk is sent after its delay (server-sent events, chunked audio)."""

    chunks: list[tuple[float, bytes]]


Action = Fail | Hang | Garbage | Drop | Cut


class Emulator:
    """Base class; subclasses implement :meth:`answer` for the normal successful response."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: deque[Action] = deque()
        self.latency = 0.0
        self._lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with emulator._lock:
                    emulator.requests.append(request)
                    action = emulator.script.popleft() if emulator.script else None
                if isinstance(action, Hang):
                    time.sleep(action.seconds)
                    self.close_connection = True
                    return
                if isinstance(action, Drop):
                    self.close_connection = True
                    return
                if isinstance(action, Fail):
                    self._send(action.status, json.dumps(action.body or emulator.error_body(action.status)).encode(),
                               "application/json", action.headers)
                    return
                if isinstance(action, Garbage):
                    self._send(200, action.body, action.content_type)
                    return
                if emulator.latency:
                    time.sleep(emulator.latency)
                status, payload, content_type = emulator.answer(request)
                if isinstance(payload, Stream):
                    self._send_stream(status, payload, content_type, cut=isinstance(action, Cut))
                elif isinstance(action, Cut):
                    self._send_stream(status, Stream([(0, payload[: len(payload) // 2]), (0, payload)]),
                                      content_type, cut=True)
                else:
                    self._send(status, payload, content_type)

            def _send_stream(self, status: int, stream: Stream, content_type: str, *, cut: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for delay, chunk in stream.chunks:
                        if delay:
                            time.sleep(delay)
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                        if cut:
                            self.close_connection = True
                            return
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True

            def _send(self, status: int, payload: bytes, content_type: str,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *actions: Action) -> None:
        with self._lock:
            self.script.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self.latency = 0.0

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error": {"code": status, "message": f"emulated error {status}", "status": "UNAVAILABLE"}}

    def answer(self, request: Request) -> tuple[int, bytes | Stream, str]:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
