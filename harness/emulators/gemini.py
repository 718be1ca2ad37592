"""Gemini API and Vertex AI: ``generateContent`` and ``streamGenerateContent?alt=sse``.

Gemini API: ``POST /{v1,v1beta}/models/{model}:…`` with ``x-goog-api-key``.
Vertex AI: ``POST /v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:…`` with
``Authorization: Bearer`` from ``POST /token`` (the service account's JWT-bearer exchange).

``tokens_per_second`` (0: instant) paces generation like a real model: a whole reply waits for
every token, a stream sends each word when it is generated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from voiceassist.types import ToolCall

from .base import Emulator, Request, Stream

_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/models/(?P<model>[^:/]+):(?P<method>generateContent|streamGenerateContent)"
                   r"|^/v1beta1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/models/"
                   r"(?P<vmodel>[^:/]+):(?P<vmethod>generateContent|streamGenerateContent)")
ACCESS_TOKEN = "ya29.emulated-access-token"


def _texts(content: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in content.get("parts", []))


def default_reply(body: dict[str, Any]) -> str:
    contents = body.get("contents", [])
    turn = sum(1 for c in contents if c.get("role") == "user")
    return f"Answer {turn}: you asked, {_texts(contents[-1]) if contents else ''}"


def words(text: str) -> list[str]:
    """The reply cut like a model's tokens (one word each, with its leading space)."""
    return re.findall(r"\s*\S+", text)


class GeminiEmulator(Emulator):
    def __init__(self) -> None:
        super().__init__()
        # The model's answer to a request body: text, or a ToolCall (a functionCall part, as
        # Gemini sends when it calls one of the request's functionDeclarations).
        self.reply: Callable[[dict[str, Any]], str | ToolCall] = default_reply
        self.blocked = False
        self.tokens_per_second = 0.0
        self.token_requests: list[str] = []

    def reset(self) -> None:
        super().reset()
        self.reply = default_reply
        self.blocked = False
        self.tokens_per_second = 0.0
        self.token_requests = []

    def error_body(self, status: int) -> dict[str, Any]:
        names = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
        return {"error": {"code": status, "message": f"emulated {status}", "status": names.get(status, "UNKNOWN")}}

    def _error(self, status: int, message: str, name: str) -> tuple[int, bytes, str]:
        return status, json.dumps({"error": {"code": status, "message": message, "status": name}}).encode(), "application/json"

    def answer(self, request: Request) -> tuple[int, bytes | Stream, str]:
        if request.path == "/token":
            form = request.body.decode()
            if "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" not in form or "assertion=" not in form:
                return 400, b'{"error": "invalid_grant"}', "application/json"
            self.token_requests.append(form)
            return 200, json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3600,
                                    "token_type": "Bearer"}).encode(), "application/json"
        match = _PATH.match(request.path)
        if not match:
            return self._error(404, "not found", "NOT_FOUND")
        vertex = match["vmodel"] is not None
        if vertex and request.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return self._error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        if not vertex and not request.headers.get("x-goog-api-key"):
            return self._error(403, "API key missing", "PERMISSION_DENIED")
        model = match["model"] or match["vmodel"]
        streaming = (match["method"] or match["vmethod"]) == "streamGenerateContent"
        body = request.json()
        if self.blocked:  # the shape that makes the SDK's response.text None
            chunks: list[dict[str, Any]] = [{"promptFeedback": {"blockReason": "SAFETY"},
                                             "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}]
        else:
            answer = self.reply(body)
            parts: list[dict[str, Any]]
            if isinstance(answer, ToolCall):
                parts = [{"functionCall": {"name": answer.name, "args": dict(answer.arguments)}}]
            else:
                parts = [{"text": piece} for piece in (words(answer) if streaming else [answer])]
            chunks = [{"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                       "modelVersion": model, "responseId": "emulated"} for part in parts]
            chunks[-1]["candidates"][0]["finishReason"] = "STOP"
            chunks[-1]["usageMetadata"] = {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17}
        delay = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        if not streaming:
            generation = delay * len(words(_texts(chunks[0].get("candidates", [{}])[0].get("content", {}))))
            return 200, Stream([(generation, json.dumps(chunks[0]).encode())]), "application/json"
        # The first token comes after the emulator's latency; each later one after its delay.
        events = [(0.0 if i == 0 else delay, b"data: " + json.dumps(c).encode() + b"\r\n\r\n")
                  for i, c in enumerate(chunks)]
        return 200, Stream(events), "text/event-stream"
