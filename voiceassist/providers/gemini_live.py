"""Gemini's Live API as a conversation engine (``[live] engine = gemini_live``): a native-audio
model hears the caller and answers in speech, through ``google-genai`` (the Gemini API with a
key, or Vertex AI with ``backend = vertex``; the connection settings fall back to ``[gemini]``'s).

The Live API takes 16 kHz and gives 24 kHz 16-bit PCM: the caller's 8 kHz audio is brought up
and the answers brought down with one streaming resampler per direction (a resampler per chunk
would click at every chunk's edge). The server finds where the caller stops and, when the
caller talks over an answer, stops it itself (``interrupted``): it keeps its context, so
nothing is truncated from here. The caller's words and the model's are transcribed by the
server (input and output transcription), for the stored turns. The model may call the
configured actions and the business's HTTP tools.

The SDK's Live client is asyncio only: each session runs its own event loop on a thread of its
own; the call's thread talks to it through thread-safe queues.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..audio.conversion import SpeechStream, UlawEncoder
from ..config import setting
from ..errors import ProviderError, ProviderTimeout, ProviderUnavailable
from ..types import EngineEvent, EngineEventKind, Exchange, SpeechAudio, ToolCall, ToolSpec
from .base import Provider
from .engine_session import MAX_TEXT_CHARS, EngineSessionBase, EngineSettings, with_history
from .gemini import GeminiConnection, gemini_client
from .sdk_errors import map_sdk_error

NAME = "gemini_live"
IN_RATE, OUT_RATE = 16000, 24000
# Messages waiting to go to the server (50 audio frames a second) before it counts as not reading.
MAX_UNSENT = 250
_END = object()  # the server's messages end here (the connection closed)


@dataclass(frozen=True)
class GeminiLiveSettings(GeminiConnection, EngineSettings):
    """``[gemini_live]``: the Live API session of a real-time call (``[live] engine = gemini_live``)."""

    # The Gemini API's native-audio Live model; on Vertex AI: gemini-live-2.5-flash-native-audio.
    model: str = "gemini-2.5-flash-native-audio-preview-09-2025"
    voice: str = ""               # e.g. Puck, Kore, Aoede (empty: the model's own)
    language: str = ""            # empty: [general] language
    # How readily the server decides the caller started and stopped talking.
    start_sensitivity: str = setting("high", choices=("high", "low"))
    end_sensitivity: str = setting("high", choices=("high", "low"))
    vad_prefix_padding_ms: int = setting(100, minimum=0, maximum=2000)


class GeminiLiveEngine(Provider[GeminiLiveSettings]):
    """Opens one :class:`GeminiLiveSession` per call."""

    name = NAME
    Settings = GeminiLiveSettings

    def setup(self) -> None:
        self.hint = f"set [{NAME}] api_key, [gemini] api_key or GEMINI_API_KEY"
        self._client, self._types = gemini_client(NAME, self.settings)

    def open(self, instructions: str, history: list[Exchange],
             tools: Sequence[ToolSpec] = ()) -> GeminiLiveSession:
        session = GeminiLiveSession(self._client, self._types, self.settings, self.language, self.hint)
        session.start(with_history(instructions, history), tools)
        return session


class GeminiLiveSession(EngineSessionBase):
    """One call's Live session (see the module's docstring)."""

    def __init__(self, client: Any, types: Any, settings: GeminiLiveSettings, language: str, hint: str) -> None:
        super().__init__(NAME)
        self.client, self.types, self.settings, self.language, self.hint = client, types, settings, language, hint
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, daemon=True, name="voiceassist-gemini-live")
        self._outgoing: asyncio.Queue[tuple[str, Any]] | None = None
        self._incoming: queue.Queue[Any] = queue.Queue()
        self._session: Any = None
        self._context: Any = None
        # The caller: 8 kHz → 16 kHz with no delay (cubic: what a voice band-limited to 4 kHz
        # needs; the default quality would hold back 65 ms of each question's end).
        self._up = SpeechStream(IN_RATE, quality="QQ")
        self._down: SpeechStream | None = None  # the answer in progress: 24 kHz → 8 kHz
        self._encoder = UlawEncoder(8000)
        self._heard: list[str] = []             # the caller's words, as the server transcribes them
        self._said: list[str] = []              # the model's words in the answer in progress

    def _run_loop(self) -> None:
        try:
            self._loop.run_forever()
        finally:  # what is still pending (a send, a receive) is cancelled, then the loop closed
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    # -- start ----------------------------------------------------------------------------------------
    def start(self, instructions: str, tools: Sequence[ToolSpec]) -> None:
        timeout = self.settings.connect_timeout
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(self._config(instructions, tools), timeout), self._loop)
        try:
            future.result(timeout + 1.0)
        except BaseException as exc:
            future.cancel()
            self.close()
            if isinstance(exc, ProviderError):
                raise
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
                raise ProviderTimeout(f"{NAME}: the session was not set up within {timeout:.1f} s",
                                      provider=NAME) from None
            raise map_sdk_error(NAME, exc, hint=self.hint) from None
        self.start_reading()

    def _config(self, instructions: str, tools: Sequence[ToolSpec]) -> Any:
        types, settings = self.types, self.settings
        sensitivity = {"high": "HIGH", "low": "LOW"}
        speech: dict[str, Any] = {}
        if settings.voice:
            speech["voice_config"] = types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=settings.voice))
        if settings.language:  # else the native-audio model follows the caller's language
            speech["language_code"] = settings.language
        config: dict[str, Any] = {
            "response_modalities": [types.Modality.AUDIO],
            "system_instruction": instructions,
            "input_audio_transcription": types.AudioTranscriptionConfig(),
            "output_audio_transcription": types.AudioTranscriptionConfig(),
            "realtime_input_config": types.RealtimeInputConfig(automatic_activity_detection=types.AutomaticActivityDetection(
                disabled=False,
                start_of_speech_sensitivity=getattr(types.StartSensitivity,
                                                    f"START_SENSITIVITY_{sensitivity[settings.start_sensitivity]}"),
                end_of_speech_sensitivity=getattr(types.EndSensitivity,
                                                  f"END_SENSITIVITY_{sensitivity[settings.end_sensitivity]}"),
                prefix_padding_ms=settings.vad_prefix_padding_ms,
                silence_duration_ms=settings.vad_silence_duration_ms)),
        }
        if speech:
            config["speech_config"] = types.SpeechConfig(**speech)
        if tools:
            config["tools"] = [types.Tool(function_declarations=[
                types.FunctionDeclaration(name=tool.name, description=tool.description,
                                          parameters_json_schema=dict(tool.parameters)) for tool in tools])]
        return types.LiveConnectConfig(**config)

    async def _open(self, config: Any, timeout: float) -> None:
        self._context = self.client.aio.live.connect(model=self.settings.model, config=config)
        try:
            self._session = await asyncio.wait_for(self._context.__aenter__(), timeout)
        except asyncio.TimeoutError:
            raise ProviderTimeout(f"{NAME}: the session was not set up within {timeout:.1f} s",
                                  provider=NAME) from None
        self._outgoing = asyncio.Queue()
        self._loop.create_task(self._send_loop(self._session, self._outgoing))
        self._loop.create_task(self._receive_loop(self._session))

    async def _send_loop(self, session: Any, outgoing: asyncio.Queue[tuple[str, Any]]) -> None:
        """The messages for the server, one at a time and in order."""
        types = self.types
        try:
            while True:
                kind, value = await outgoing.get()
                if kind == "audio":
                    await session.send_realtime_input(audio=types.Blob(data=value, mime_type=f"audio/pcm;rate={IN_RATE}"))
                elif kind == "text":
                    await session.send_realtime_input(text=value)
                elif kind == "tool":
                    call, output = value
                    await session.send_tool_response(function_responses=[types.FunctionResponse(
                        id=call.id or None, name=call.name, response={"result": output})])
                else:
                    return
        except Exception as exc:  # the connection is gone: the reader reports it
            self._incoming.put(exc)

    async def _receive_loop(self, session: Any) -> None:
        try:
            while not self._closed.is_set():
                async for message in session.receive():  # one model turn, then the next
                    self._incoming.put(message)
        except Exception as exc:
            self._incoming.put(exc)
        self._incoming.put(_END)

    # -- to the model ---------------------------------------------------------------------------------
    def send_audio(self, mulaw: bytes) -> None:
        self._put("audio", self._up.feed(SpeechAudio(mulaw, "mulaw", 8000)))

    def send_text(self, text: str) -> None:
        self._put("text", text)

    def send_tool_result(self, call: ToolCall, output: str) -> None:
        self._put("tool", (call, output))

    def _put(self, kind: str, value: Any) -> None:
        outgoing = self._outgoing
        if outgoing is None or self._closed.is_set() or not self._loop.is_running():
            raise ProviderUnavailable(f"{NAME}: the session is closed", provider=NAME)
        if outgoing.qsize() > MAX_UNSENT:
            raise ProviderUnavailable(f"{NAME}: the server stopped taking the caller's audio", provider=NAME)
        self._loop.call_soon_threadsafe(outgoing.put_nowait, (kind, value))

    # -- from the model -------------------------------------------------------------------------------
    def _receive(self) -> Iterator[EngineEvent | None]:
        while True:
            message = self._incoming.get()
            if message is _END:
                return
            if isinstance(message, BaseException):
                raise message
            yield from self._events_of(message)

    def _events_of(self, message: Any) -> Iterator[EngineEvent | None]:
        content = getattr(message, "server_content", None)
        if content is not None:
            if (heard := getattr(content, "input_transcription", None)) and heard.text:
                self._heard.append(heard.text)
            if (said := getattr(content, "output_transcription", None)) and said.text:
                yield from self._caller_said()
                self._said.append(said.text)
            turn = getattr(content, "model_turn", None)
            for part in getattr(turn, "parts", None) or []:
                data = getattr(getattr(part, "inline_data", None), "data", None)
                if isinstance(data, bytes) and data:
                    yield from self._caller_said()
                    yield EngineEvent(EngineEventKind.AUDIO, audio=self._answer_audio(data))
            if getattr(content, "interrupted", False):
                yield from self._answer_ended(tail=False)
                yield EngineEvent(EngineEventKind.SPEECH_STARTED)
            if getattr(content, "turn_complete", False):
                yield from self._caller_said()
                yield from self._answer_ended()
                yield EngineEvent(EngineEventKind.DONE)
        calls = getattr(getattr(message, "tool_call", None), "function_calls", None) or []
        for call in calls:
            yield from self._caller_said()
            args = call.args if isinstance(call.args, dict) else {}
            yield EngineEvent(EngineEventKind.TOOL_CALL, tool=ToolCall(str(call.name or "")[:100], args,
                                                                      id=str(call.id or "")[:100]))
        if getattr(message, "go_away", None) is not None:
            yield EngineEvent(EngineEventKind.ERROR, text=f"the server will close the session soon "
                                                          f"({message.go_away.time_left})")
        yield None

    def _answer_audio(self, pcm: bytes) -> bytes:
        if self._down is None:
            self._down = SpeechStream(8000)
        return self._encoder.encode(self._down.feed(SpeechAudio(pcm, "s16le", OUT_RATE)))

    def _caller_said(self) -> Iterator[EngineEvent]:
        """What the server heard of the caller, once the model begins to answer it."""
        text = "".join(self._heard).strip()[:MAX_TEXT_CHARS]
        self._heard = []
        if text:
            yield EngineEvent(EngineEventKind.CALLER_SAID, text=text)

    def _answer_ended(self, *, tail: bool = True) -> Iterator[EngineEvent]:
        """The answer's last audio (what the resampler holds, unless the caller cut it short)
        and its words."""
        if self._down is not None and tail:
            if rest := self._down.finish():
                yield EngineEvent(EngineEventKind.AUDIO, audio=self._encoder.encode(rest))
        self._down = None
        text = "".join(self._said).strip()[:MAX_TEXT_CHARS]
        self._said = []
        if text:
            yield EngineEvent(EngineEventKind.ASSISTANT_SAID, text=text)

    def close(self) -> None:
        super().close()
        if not self._thread.is_alive():
            if not self._thread.ident and not self._loop.is_closed():  # never started
                self._loop.close()
            return
        future = asyncio.run_coroutine_threadsafe(self._shut(), self._loop)
        try:
            future.result(2.0)
        except Exception:  # gone already, or slow to let go: the loop stops anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _shut(self) -> None:
        if self._outgoing is not None:
            self._outgoing.put_nowait(("end", None))
        if self._context is not None and self._session is not None:
            await self._context.__aexit__(None, None, None)
