"""Emulators of the providers' real wire protocols, for the unmodified SDKs to talk to on 127.0.0.1.

Each emulator records every request and answers from a per-test script of actions
(``Fail``, ``Hang``, ``Garbage``, ``Drop``), falling back to its normal successful answer.
"""

from .base import Cut, Drop, Emulator, Fail, Garbage, Hang, Request, Stream
from .gemini import GeminiEmulator
from .google_tts import GoogleTTSEmulator
from .openai_api import OpenAIEmulator
from .openai_realtime import RealtimeEmulator
from .speech import SpeechEmulator
from .speech_grpc import Abort, Sever, SpeechGrpcEmulator, StreamRecord

__all__ = ["Cut", "Drop", "Emulator", "Fail", "Garbage", "Hang", "Request", "Stream",
           "GeminiEmulator", "GoogleTTSEmulator", "OpenAIEmulator", "RealtimeEmulator", "SpeechEmulator",
           "Abort", "Sever", "SpeechGrpcEmulator", "StreamRecord"]
