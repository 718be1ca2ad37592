"""A webhook receiver on 127.0.0.1 for the tests: records every request (path, headers, body)
and answers as told; it can be stopped and started again on the same port (a receiver that is down
for a while)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: Message          # case-insensitive, as HTTP header names are
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body.decode("utf-8"))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass  # a client that gave up on a slow answer: expected here


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request and answers ``status`` (or the
    next of ``statuses``) after ``delay`` seconds; it can be stopped and started on the same port."""

    port: int = 0
    status: int = 200
    statuses: deque = field(default_factory=deque)
    delay: float = 0.0
    answer_headers: dict[str, str] = field(default_factory=dict)
    answer_body: bytes = b""          # e.g. a caller lookup's JSON facts
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: _QuietServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(Received(self.path, self.headers, body))
                time.sleep(receiver.delay)
                status = receiver.statuses.popleft() if receiver.statuses else receiver.status
                self.send_response(status)
                for name, value in receiver.answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.answer_body)))
                self.end_headers()
                self.wfile.write(receiver.answer_body)

            def log_message(self, *args):
                pass

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ids(self, path: str | None = None) -> list[str]:
        return [r.event["id"] for r in self.received if path is None or r.path == path]
