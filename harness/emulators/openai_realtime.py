"""OpenAI Realtime API over WebSocket (``GET /v1/realtime?model=…``), as used for text-to-speech.

Speaks the GA event protocol: ``session.created`` on connect; ``session.update`` →
``session.updated``; ``conversation.item.create`` → ``conversation.item.added``;
``response.create`` → ``response.created``, ``response.output_audio.delta`` (base64 audio in
the session's output format, here G.711 μ-law), ``response.output_audio.done``, ``response.done``.
The audio is the tone for the text, like the other TTS emulators.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections import deque
from typing import Any

from websockets.sync.server import ServerConnection, serve

from . import mulaw
from .base import Action, Cut, Drop, Fail, Garbage, Hang
from .openai_api import tone_for, tone_pcm

_ERROR_CODES = {429: ("rate_limit_exceeded", "rate_limit_error"), 500: ("server_error", "server_error"),
                503: ("server_error", "server_error"), 400: ("invalid_request", "invalid_request_error")}


class RealtimeEmulator:
    def __init__(self) -> None:
        self.seconds = 1.5
        self.latency = 0.0
        self.script: deque[Action] = deque()
        self.connections: list[dict[str, Any]] = []  # path, headers and events received
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server = serve(self._handle, "127.0.0.1", 0, process_request=self._authorize,
                            compression=None, max_size=None)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        """What the openai SDK takes as ``base_url``; it derives ``ws://…/v1/realtime`` from it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, *actions: Action) -> None:
        with self._lock:
            self.script.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.connections.clear()
            self.seconds = 1.5
            self.latency = 0.0

    def close(self) -> None:
        self.server.shutdown()

    def _authorize(self, connection: ServerConnection, request: Any) -> Any:
        if not request.path.startswith("/v1/realtime"):
            return connection.respond(404, "Not Found\n")
        action = None
        with self._lock:
            if self.script and isinstance(self.script[0], Fail) and self.script[0].status in (401, 403):
                action = self.script.popleft()
        if action is not None or not request.headers.get("Authorization", "").startswith("Bearer "):
            return connection.respond(401, "Unauthorized\n")
        return None

    def _send(self, connection: ServerConnection, event: dict[str, Any]) -> None:
        event.setdefault("event_id", f"event_{next(self._ids)}")
        connection.send(json.dumps(event))

    def _handle(self, connection: ServerConnection) -> None:
        record: dict[str, Any] = {"path": connection.request.path,
                                  "headers": {k.lower(): v for k, v in connection.request.headers.raw_items()},
                                  "events": []}
        with self._lock:
            self.connections.append(record)
        session: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime-2.1-mini", "output_modalities": ["audio"],
                                   "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}}}
        text = ""
        self._send(connection, {"type": "session.created", "session": session})
        try:
            for message in connection:
                event = json.loads(message)
                record["events"].append(event)
                kind = event.get("type")
                if kind == "session.update":
                    session.update(event.get("session", {}))
                    self._send(connection, {"type": "session.updated", "session": session})
                elif kind == "conversation.item.create":
                    item = event.get("item", {})
                    text = "".join(part.get("text", "") for part in item.get("content", []))
                    self._send(connection, {"type": "conversation.item.added", "previous_item_id": None,
                                            "item": {**item, "id": "item_1", "status": "completed"}})
                elif kind == "response.create":
                    if not self._respond(connection, session, text):
                        return
                else:
                    self._send(connection, {"type": "error", "error": {
                        "type": "invalid_request_error", "code": "unknown_event", "message": f"unknown {kind}"}})
        except Exception:
            return

    def _respond(self, connection: ServerConnection, session: dict[str, Any], text: str) -> bool:
        with self._lock:
            action = self.script.popleft() if self.script else None
        if isinstance(action, Hang):
            time.sleep(action.seconds)
            connection.close()
            return False
        if isinstance(action, Drop):
            connection.close()
            return False
        if isinstance(action, Fail):
            code, kind = _ERROR_CODES.get(action.status, ("server_error", "server_error"))
            if action.body:
                code, kind = action.body.get("code", code), action.body.get("type", kind)
            self._send(connection, {"type": "error", "error": {"type": kind, "code": code,
                                                                "message": f"emulated {action.status}"}})
            return True
        response = {"id": "resp_1", "object": "realtime.response", "status": "in_progress", "output": []}
        self._send(connection, {"type": "response.created", "response": response})
        if isinstance(action, Garbage):
            self._send(connection, {"type": "response.done", "response": {
                **response, "status": "failed", "status_details": {"type": "failed", "error": {
                    "type": "server_error", "code": "server_error", "message": "The server had an error"}}}})
            return True
        if self.latency:
            time.sleep(self.latency)
        fmt = session.get("audio", {}).get("output", {}).get("format", {}).get("type", "audio/pcm")
        if fmt == "audio/pcmu":
            audio, chunk = mulaw.encode(tone_pcm(tone_for(text), self.seconds, 8000)), 1600
        else:
            audio, chunk = tone_pcm(tone_for(text), self.seconds, 24000), 9600
        for index, start in enumerate(range(0, len(audio), chunk)):
            self._send(connection, {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_2",
                                    "output_index": 0, "content_index": 0,
                                    "delta": base64.b64encode(audio[start:start + chunk]).decode()})
            if isinstance(action, Cut) and index == 0:
                connection.close()
                return False
        self._send(connection, {"type": "response.output_audio.done", "response_id": "resp_1", "item_id": "item_2",
                                "output_index": 0, "content_index": 0})
        self._send(connection, {"type": "response.done", "response": {**response, "status": "completed"}})
        return True
