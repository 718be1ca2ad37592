"""OpenAI ``POST /v1/audio/speech``: returns a tone whose frequency identifies the input text.

``response_format=pcm`` gives raw 24 kHz s16le, as the real API does; the tone lets a test find
the answer in what the caller heard (see :func:`tone_for`).
"""

from __future__ import annotations

import io
import json
import wave
import zlib

import numpy as np

from .base import Emulator, Request

# Clear of the 1000 Hz beep and of the marker tones (2200 Hz and up) used by the questions.
ANSWER_TONES = (440.0, 550.0, 660.0, 770.0, 880.0, 1320.0, 1540.0, 1760.0)
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
          "marin", "cedar"}


def tone_for(text: str) -> float:
    return ANSWER_TONES[zlib.crc32(text.encode("utf-8")) % len(ANSWER_TONES)]


def tone_pcm(frequency: float, seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * t) * 9000).astype("<i2").tobytes()


class OpenAITTSEmulator(Emulator):
    def __init__(self) -> None:
        super().__init__()
        self.seconds = 1.5
        self.tones: dict[str, float] = {}  # text -> tone, for tests that need distinct tones

    def reset(self) -> None:
        super().reset()
        self.seconds = 1.5
        self.tones = {}

    def tone(self, text: str) -> float:
        return self.tones.get(text) or tone_for(text)

    def error_body(self, status: int) -> dict[str, object]:
        kinds = {429: ("rate_limit_exceeded", "requests"), 401: ("invalid_api_key", "invalid_request_error")}
        code, kind = kinds.get(status, ("server_error", "server_error"))
        return {"error": {"message": f"emulated {status}", "type": kind, "param": None, "code": code}}

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        if request.path != "/v1/audio/speech":
            return 404, json.dumps(self.error_body(404)).encode(), "application/json"
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return 401, json.dumps(self.error_body(401)).encode(), "application/json"
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
            return 200, pcm, "audio/pcm"
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
