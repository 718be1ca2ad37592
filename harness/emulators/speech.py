"""Google Cloud Speech-to-Text REST: v1 ``POST /v1/speech:recognize`` and v2
``POST /v2/projects/{p}/locations/{l}/recognizers/{r}:recognize``.

Not a recogniser: silence gives the real API's "no speech" answer (no ``results``); speech gives
the transcript registered for the marker tone found in the audio (tests put a short tone of a
known frequency before each spoken question), else ``default_transcript``.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np

from .base import Emulator, Request

V2_PATH = re.compile(r"^/v2/projects/[^/]+/locations/[^/]+/recognizers/[^/:]+:recognize")
V2_ENCODINGS = {1: "LINEAR16", 2: "MULAW", 3: "ALAW"}
V1_ENCODINGS = {0: "ENCODING_UNSPECIFIED", 1: "LINEAR16", 2: "FLAC", 3: "MULAW", 4: "AMR", 5: "AMR_WB",
                6: "OGG_OPUS", 7: "SPEEX_WITH_HEADER_BYTE", 8: "MP3", 9: "WEBM_OPUS"}


def _pcm(audio: bytes, encoding: str) -> np.ndarray:
    if encoding == "LINEAR16":
        return np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.float64)
    raise ValueError(f"emulator only decodes LINEAR16, got {encoding}")


def marker_strength(pcm: np.ndarray, rate: int, frequency: float) -> float:
    """Largest share of a 100 ms window's energy at ``frequency`` (0..1)."""
    window = rate // 10
    best = 0.0
    for start in range(0, max(1, len(pcm) - window), window // 2):
        chunk = pcm[start:start + window]
        if len(chunk) < window:
            break
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(window))) ** 2
        total = spectrum.sum()
        if total <= 0:
            continue
        bin_index = int(round(frequency * window / rate))
        band = spectrum[max(0, bin_index - 2): bin_index + 3].sum()
        best = max(best, band / total)
    return best


class SpeechEmulator(Emulator):
    def __init__(self) -> None:
        super().__init__()
        self.transcripts: dict[float, str] = {}
        # The language spoken after a marker (e.g. {3700: "de-DE"}): reported when the request
        # offers it (its languageCode or alternativeLanguageCodes), as Google reports what it heard.
        self.languages: dict[float, str] = {}
        self.default_transcript = "What are your opening hours?"
        self.confidence = 0.92

    def reset(self) -> None:
        super().reset()
        self.default_transcript = "What are your opening hours?"
        self.languages = {}

    def error_body(self, status: int) -> dict[str, object]:
        names = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 403: "PERMISSION_DENIED"}
        return {"error": {"code": status, "message": f"emulated {status}", "status": names.get(status, "UNKNOWN")}}

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        body = request.json()
        if request.path.startswith("/v1/speech:recognize"):
            config = body.get("config", {})
            encodings, content = V1_ENCODINGS, body.get("audio", {}).get("content", "")
            offered = [config.get("languageCode", "en-US"), *config.get("alternativeLanguageCodes", [])]
        elif V2_PATH.match(request.path):
            config = body.get("config", {}).get("explicitDecodingConfig", {})
            encodings, content = V2_ENCODINGS, body.get("content", "")
            offered = body.get("config", {}).get("languageCodes", ["en-US"])
        else:
            return 404, b'{"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}', "application/json"
        encoding = config.get("encoding", 0)
        encoding = encodings.get(encoding, encoding) if isinstance(encoding, int) else encoding
        rate = int(config.get("sampleRateHertz") or config.get("sample_rate_hertz") or 8000)
        audio = base64.b64decode(content)
        pcm = _pcm(audio, encoding)
        frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160) if len(pcm) >= 160 else np.zeros((0, 160))
        loud = int((np.abs(frames).mean(axis=1) > 256).sum()) if len(frames) else 0
        if loud < 5:
            payload = {"totalBilledTime": "1s", "requestId": "1"}
        else:
            transcript, language = self.default_transcript, offered[0]
            if self.transcripts:
                strengths = {f: marker_strength(pcm, rate, f) for f in self.transcripts}
                frequency, strength = max(strengths.items(), key=lambda item: item[1])
                if strength > 0.5:
                    transcript = self.transcripts[frequency]
                    spoken = self.languages.get(frequency, "")
                    language = next((tag for tag in offered if tag.lower() == spoken.lower()), language)
            payload = {"results": [{"alternatives": [{"transcript": transcript, "confidence": self.confidence}],
                                    "resultEndTime": f"{len(pcm) / rate:.3f}s", "languageCode": language.lower()}],
                       "totalBilledTime": f"{int(len(pcm) / rate) + 1}s", "requestId": "42"}
        return 200, json.dumps(payload).encode(), "application/json"
