"""Emulators of the providers' real wire protocols, for the unmodified SDKs to talk to on 127.0.0.1.

Each emulator records every request and answers from a per-test script of actions
(``Fail``, ``Hang``, ``Garbage``, ``Drop``), falling back to its normal successful answer.
"""

from .base import Drop, Emulator, Fail, Garbage, Hang, Request
from .gemini import GeminiEmulator
from .openai_tts import OpenAITTSEmulator
from .speech import SpeechEmulator

__all__ = ["Drop", "Emulator", "Fail", "Garbage", "Hang", "Request",
           "GeminiEmulator", "OpenAITTSEmulator", "SpeechEmulator"]
