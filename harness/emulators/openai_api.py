"""OpenAI's REST API: ``/v1/audio/speech``, ``/v1/chat/completions`` (JSON or SSE) and
``/v1/audio/transcriptions``.

Speech is a tone whose frequency identifies the input text (see :func:`tone_for`), so a test can
find the answer in what the caller heard; ``response_format=pcm`` gives raw 24 kHz s16le, as the
real API does. Chat replies are paced by ``tokens_per_second`` like the Gemini emulator's.

``chat_reply(body)`` gives the chat answer: its text, a :class:`~voiceassist.types.ToolCall` (the
model calls that tool), or a tuple of them (text said first, then one or more calls), sent in
OpenAI's wire format (``tool_calls`` on the message, or as ``delta.tool_calls`` fragments when
streamed). A call whose ``arguments`` is a string is sent verbatim (a model's invalid JSON). What
a request offered (``tools``, ``tool_choice``) is in ``requests[i].json()``.
"""

from __future__ import annotations

import io
import json
import uuid
import wave
import zlib
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np

from voiceassist.types import ToolCall

from .base import Emulator, Request, Stream
from .gemini import words

# What the chat model answers: words, a tool call, or words then tool calls.
ChatReply: TypeAlias = str | ToolCall | tuple[str | ToolCall, ...]

# Clear of the 1000 Hz beep and of the marker tones (2200 Hz and up) used by the questions.
ANSWER_TONES = (440.0, 550.0, 660.0, 770.0, 880.0, 1320.0, 1540.0, 1760.0)
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
          "marin", "cedar"}


def tone_for(text: str) -> float:
    return ANSWER_TONES[zlib.crc32(text.encode("utf-8")) % len(ANSWER_TONES)]


def tone_pcm(frequency: float, seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * t) * 9000).astype("<i2").tobytes()


def default_chat_reply(body: dict[str, object]) -> str:
    messages = body.get("messages", [])
    assert isinstance(messages, list)
    turn = sum(1 for m in messages if m.get("role") == "user")
    return f"Answer {turn}: you asked, {messages[-1].get('content', '') if messages else ''}"


class OpenAIEmulator(Emulator):
    def __init__(self) -> None:
        super().__init__()
        self.seconds = 1.5
        self.speech_chunk_delay = 0.0   # seconds between the 100 ms pieces of a speech answer
        self.tones: dict[str, float] = {}  # text -> tone, for tests that need distinct tones
        self.tokens_per_second = 0.0
        self.chat_reply: Callable[[dict[str, Any]], ChatReply] = default_chat_reply
        self.empty_reply = False
        self.transcript = "What are your opening hours?"

    def reset(self) -> None:
        super().reset()
        self.seconds = 1.5
        self.speech_chunk_delay = 0.0
        self.tones = {}
        self.tokens_per_second = 0.0
        self.chat_reply = default_chat_reply
        self.empty_reply = False
        self.transcript = "What are your opening hours?"

    def tone(self, text: str) -> float:
        return self.tones.get(text) or tone_for(text)

    def error_body(self, status: int) -> dict[str, object]:
        kinds = {429: ("rate_limit_exceeded", "requests"), 401: ("invalid_api_key", "invalid_request_error")}
        code, kind = kinds.get(status, ("server_error", "server_error"))
        return {"error": {"message": f"emulated {status}", "type": kind, "param": None, "code": code}}

    def answer(self, request: Request) -> tuple[int, bytes | Stream, str]:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return 401, json.dumps(self.error_body(401)).encode(), "application/json"
        if request.path == "/v1/chat/completions":
            return self.chat(request.json())
        if request.path == "/v1/audio/transcriptions":
            return self.transcribe(request)
        if request.path != "/v1/audio/speech":
            return 404, json.dumps(self.error_body(404)).encode(), "application/json"
        body = request.json()
        text = body.get("input", "")
        if len(text) > 4096:
            return 400, json.dumps({"error": {"message": "string too long", "type": "invalid_request_error",
                                              "param": "input", "code": "string_above_max_length"}}).encode(), "application/json"
        if body.get("voice") not in VOICES:
            return 400, json.dumps({"error": {"message": "bad voice", "type": "invalid_request_error",
                                              "param": "voice", "code": None}}).encode(), "application/json"
        pcm = tone_pcm(self.tone(text), self.seconds)
        fmt = body.get("response_format", "mp3")
        if fmt == "pcm":
            # As the API does: chunked, as the audio is made (here 100 ms pieces, speech_chunk_delay
            # apart: 0 sends them back to back).
            piece = 4800
            return 200, Stream([(self.speech_chunk_delay if i else 0.0, pcm[i:i + piece])
                                for i in range(0, len(pcm), piece)]), "audio/pcm"
        if fmt == "wav":
            buffer = io.BytesIO()
            with wave.open(buffer, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(24000)
                wav.writeframes(pcm)
            return 200, buffer.getvalue(), "audio/wav"
        return 400, json.dumps({"error": {"message": f"emulator does not encode {fmt}", "type": "invalid_request_error",
                                          "param": "response_format", "code": None}}).encode(), "application/json"

    def chat(self, body: dict[str, Any]) -> tuple[int, bytes | Stream, str]:
        reply = "" if self.empty_reply else self.chat_reply(body)
        if not isinstance(reply, str):
            parts = reply if isinstance(reply, tuple) else (reply,)
            return self.chat_tool_calls(body, "".join(p for p in parts if isinstance(p, str)),
                                        [p for p in parts if isinstance(p, ToolCall)])
        delay = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        base = {"id": "chatcmpl-emulated", "created": 1700000000, "model": body.get("model")}
        if not body.get("stream"):
            payload = {**base, "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                    "finish_reason": "stop" if reply else "length"}],
                       "usage": {"prompt_tokens": 20, "completion_tokens": len(words(reply)), "total_tokens": 20}}
            return 200, Stream([(delay * len(words(reply)), json.dumps(payload).encode())]), "application/json"
        events: list[tuple[float, bytes]] = []
        for i, piece in enumerate(words(reply)):
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            events.append((0.0 if i == 0 else delay, b"data: " + json.dumps(chunk).encode() + b"\n\n"))
        last: dict[str, Any] = {**base, "object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop" if reply else "length"}]}
        events.append((0.0, b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n"))
        return 200, Stream(events), "text/event-stream"

    def chat_tool_calls(self, body: dict[str, Any], text: str,
                        calls: list[ToolCall]) -> tuple[int, bytes | Stream, str]:
        """``text`` (may be empty), then ``calls``, ending with finish reason ``tool_calls``."""
        delay = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        base = {"id": "chatcmpl-emulated", "created": 1700000000, "model": body.get("model")}
        sent = [(f"call_{uuid.uuid4().hex[:24]}", call.name,
                 call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)) for call in calls]
        tokens = len(words(text)) + sum(len(arguments) // 4 + 1 for _, _, arguments in sent)
        if not body.get("stream"):
            message = {"role": "assistant", "content": text or None,
                       "tool_calls": [{"id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": arguments}}
                                      for call_id, name, arguments in sent]}
            payload = {**base, "object": "chat.completion",
                       "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                       "usage": {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens}}
            return 200, Stream([(delay * tokens, json.dumps(payload).encode())]), "application/json"

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        # As the API does: the role first (with an empty text when words follow), each call's id
        # and name with no arguments, then its arguments a few characters (a token) at a time.
        events: list[tuple[float, bytes]] = []
        role: dict[str, Any] = {"role": "assistant"}
        if text:
            events.append((0.0, event({**role, "content": ""})))
            role = {}
        for piece in words(text):
            events.append((delay, event({"content": piece})))
        for index, (call_id, name, arguments) in enumerate(sent):
            opening = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            delta = {**role, "content": None, "tool_calls": [opening]} if role else {"tool_calls": [opening]}
            events.append((delay if events else 0.0, event(delta)))
            role = {}
            for start in range(0, len(arguments), 5):
                events.append((delay, event({"tool_calls": [{"index": index,
                                                             "function": {"arguments": arguments[start:start + 5]}}]})))
        events.append((0.0, event({}, "tool_calls") + b"data: [DONE]\n\n"))
        return 200, Stream(events), "text/event-stream"

    def transcribe(self, request: Request) -> tuple[int, bytes, str]:
        """multipart/form-data with the WAV in ``file``; silence gives an empty text, as Whisper-style
        models return for no speech."""
        if b'name="model"' not in request.body:
            return 400, json.dumps({"error": {"message": "model is required", "type": "invalid_request_error",
                                              "param": "model", "code": None}}).encode(), "application/json"
        start = request.body.find(b"RIFF")
        if start < 0:
            return 400, json.dumps({"error": {"message": "unsupported file", "type": "invalid_request_error",
                                              "param": "file", "code": None}}).encode(), "application/json"
        with wave.open(io.BytesIO(request.body[start:]), "rb") as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        text = self.transcript if len(pcm) and np.abs(pcm.astype(np.int32)).mean() > 256 else ""
        return 200, json.dumps({"text": text}).encode(), "application/json"
