"""Gemini API: ``POST /{v1,v1beta}/models/{model}:generateContent``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .base import Emulator, Request

_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/(?P<model>[^:/]+):generateContent")


def _texts(content: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in content.get("parts", []))


def default_reply(body: dict[str, Any]) -> str:
    contents = body.get("contents", [])
    turn = sum(1 for c in contents if c.get("role") == "user")
    return f"Answer {turn}: you asked, {_texts(contents[-1]) if contents else ''}"


class GeminiEmulator(Emulator):
    def __init__(self) -> None:
        super().__init__()
        self.reply: Callable[[dict[str, Any]], str] = default_reply
        self.blocked = False

    def reset(self) -> None:
        super().reset()
        self.reply = default_reply
        self.blocked = False

    def error_body(self, status: int) -> dict[str, Any]:
        names = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
        return {"error": {"code": status, "message": f"emulated {status}", "status": names.get(status, "UNKNOWN")}}

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        match = _PATH.match(request.path)
        if not match:
            return 404, json.dumps(self.error_body(404)).encode(), "application/json"
        if not request.headers.get("x-goog-api-key"):
            return 403, json.dumps({"error": {"code": 403, "message": "API key missing", "status": "PERMISSION_DENIED"}}).encode(), "application/json"
        body = request.json()
        if self.blocked:  # the shape that makes the SDK's response.text None
            payload: dict[str, Any] = {"promptFeedback": {"blockReason": "SAFETY"},
                                       "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}
        else:
            text = self.reply(body)
            payload = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                       "finishReason": "STOP", "index": 0}],
                       "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17},
                       "modelVersion": match["model"], "responseId": "emulated"}
        return 200, json.dumps(payload).encode(), "application/json"
