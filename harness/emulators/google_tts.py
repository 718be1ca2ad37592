"""Google Cloud Text-to-Speech REST: ``POST /v1/text:synthesize``.

Answers with the tone for the text (see :func:`harness.emulators.openai_api.tone_for`), encoded as
asked: MULAW or LINEAR16 come wrapped in a WAV header, as the real API returns them.
"""

from __future__ import annotations

import base64
import json

from . import mulaw
from .base import Emulator, Request
from .openai_api import tone_for, tone_pcm

# v1 AudioEncoding numbers (the SDK sends ints with enum-encoding=int).
ENCODINGS = {1: "LINEAR16", 2: "MP3", 3: "OGG_OPUS", 5: "MULAW", 6: "ALAW", 7: "PCM"}
MAX_INPUT_BYTES = 5000


class GoogleTTSEmulator(Emulator):
    def __init__(self) -> None:
        super().__init__()
        self.seconds = 1.5

    def reset(self) -> None:
        super().reset()
        self.seconds = 1.5

    def error_body(self, status: int) -> dict[str, object]:
        names = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
        return {"error": {"code": status, "message": f"emulated {status}", "status": names.get(status, "UNKNOWN")}}

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        if not request.path.startswith("/v1/text:synthesize"):
            return 404, json.dumps(self.error_body(404)).encode(), "application/json"
        body = request.json()
        text = body.get("input", {}).get("text", "")
        if not text:
            return 400, json.dumps({"error": {"code": 400, "message": "Either `input.text` or `input.ssml` is required",
                                              "status": "INVALID_ARGUMENT"}}).encode(), "application/json"
        if len(text.encode()) > MAX_INPUT_BYTES:
            return 400, json.dumps({"error": {"code": 400, "message": "Either `input.text` or `input.ssml` is longer "
                                              "than the limit of 5000 bytes.", "status": "INVALID_ARGUMENT"}}).encode(), "application/json"
        config = body.get("audioConfig", {})
        encoding = config.get("audioEncoding", 0)
        encoding = ENCODINGS.get(encoding, encoding) if isinstance(encoding, int) else encoding
        rate = int(config.get("sampleRateHertz") or 24000)
        pcm = tone_pcm(tone_for(text), self.seconds, rate)
        if encoding == "MULAW":
            audio = mulaw.wav_file(mulaw.encode(pcm), rate)
        else:
            return 400, json.dumps({"error": {"code": 400, "message": f"emulator does not encode {encoding}",
                                              "status": "INVALID_ARGUMENT"}}).encode(), "application/json"
        return 200, json.dumps({"audioContent": base64.b64encode(audio).decode()}).encode(), "application/json"
