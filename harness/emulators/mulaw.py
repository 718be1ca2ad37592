"""G.711 μ-law encoding for the emulators that return telephone audio (numpy; audioop is gone in 3.13)."""

from __future__ import annotations

import numpy as np

_BIAS = 0x84
_CLIP = 32635


def encode(pcm: bytes) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def wav_file(mulaw: bytes, rate: int = 8000) -> bytes:
    """``mulaw`` in a RIFF/WAVE container (format 7), as Google Text-to-Speech returns MULAW."""
    fmt = (7).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little") \
        + rate.to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little") + (0).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(mulaw).to_bytes(4, "little") + mulaw
    return b"RIFF" + len(body).to_bytes(4, "little") + body
