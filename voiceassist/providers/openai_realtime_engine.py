"""OpenAI's Realtime API as a conversation engine (``[live] engine = openai_realtime``): one
speech-to-speech model hears the caller and answers, with no speech-to-text or text-to-speech of
ours in between.

The session is set up for the phone line: G.711 μ-law (``audio/pcmu``, 8 kHz) both ways, so no
audio is resampled; the server finds where the caller stops (``server_vad`` or
``semantic_vad``); the caller's words are transcribed (``transcription_model``) so that each turn
is stored with its question. When the caller talks over an answer, the server stops generating
it, and the session cancels what is left and truncates the answer's item to the audio the caller
actually heard, so the model's context matches the call. The model may call the configured
actions (transfer, message, end of call) and the business's HTTP tools; the call decides and
sends the outcome back.

Settings are ``[openai_realtime]``'s, shared with the Realtime text-to-speech (model, voice,
key). Uses the SDK's synchronous WebSocket client (``openai[realtime]``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ProviderError, ProviderTimeout, ProviderUnavailable
from ..types import EngineEvent, EngineEventKind, Exchange, ToolCall, ToolSpec
from .engine_session import MAX_TEXT_CHARS, SEND_TIMEOUT, EngineSessionBase, set_send_timeout, with_history
from .openai_client import OpenAIProvider
from .openai_realtime import OpenAIRealtimeSettings, closed_after, event_error, require_websockets
from .sdk_errors import map_sdk_error

NAME = "openai_realtime"
# A server event larger than this is refused (an answer's audio comes in many small deltas).
MAX_MESSAGE_BYTES = 1 << 20
# Error codes after which the session cannot go on: the cascade takes the call.
_FATAL_CODES = frozenset({"session_expired", "invalid_api_key", "insufficient_quota", "rate_limit_exceeded",
                          "server_error"})


class OpenAIRealtimeEngine(OpenAIProvider[OpenAIRealtimeSettings]):
    """Opens one :class:`OpenAIRealtimeSession` per call."""

    name = NAME
    Settings = OpenAIRealtimeSettings

    def setup(self) -> None:
        require_websockets(NAME)
        super().setup()

    def open(self, instructions: str, history: list[Exchange],
             tools: Sequence[ToolSpec] = ()) -> OpenAIRealtimeSession:
        """Connect and set the session up (raises ``ProviderError`` when that fails within
        ``connect_timeout``)."""
        session = OpenAIRealtimeSession(self._client, self.settings, self.language, self.hint)
        session.start(with_history(instructions, history), tools)
        return session


class OpenAIRealtimeSession(EngineSessionBase):
    """One call's Realtime session (see the module's docstring)."""

    def __init__(self, client: Any, settings: OpenAIRealtimeSettings, language: str, hint: str) -> None:
        super().__init__(NAME)
        self.client, self.settings, self.language, self.hint = client, settings, language, hint
        self._connection: Any = None
        self._lock = threading.Lock()   # what the reader learns, read by answer_cut
        self._responding = False        # a response is being generated
        # The current answer's audio items and how many ms of audio each had, in order.
        self._items: list[list[Any]] = []
        self._local = LocalTurns(settings.vad_silence_duration_ms) if settings.turn_detection == "local" else None

    # -- start ----------------------------------------------------------------------------------------
    def start(self, instructions: str, tools: Sequence[ToolSpec]) -> None:
        timeout = self.settings.connect_timeout
        try:
            self._connection = self.client.realtime.connect(
                model=self.settings.model, max_retries=0,
                websocket_connection_options={"open_timeout": timeout, "close_timeout": 1.0,
                                              "max_size": MAX_MESSAGE_BYTES, "compression": None}).__enter__()
        except Exception as exc:
            raise _connect_error(exc, timeout, self.hint) from None
        transport = getattr(self._connection, "_connection", None)
        if transport is not None and getattr(transport, "socket", None) is not None:
            set_send_timeout(transport.socket, SEND_TIMEOUT)
        with closed_after(timeout, self._close_connection) as expired:
            try:
                self._connection.session.update(session=self._session_config(instructions, tools))
                for event in self._connection:
                    if event.type == "session.updated":
                        break
                    if event.type == "error":
                        raise event_error(getattr(event, "error", None), self.hint)
                else:
                    raise ProviderUnavailable(f"{NAME}: the connection closed while the session was set up",
                                              provider=NAME)
            except Exception as exc:
                self.close()
                if expired.is_set():
                    raise ProviderTimeout(f"{NAME}: the session was not set up within {timeout:.1f} s",
                                          provider=NAME) from None
                raise exc if isinstance(exc, ProviderError) else map_sdk_error(NAME, exc, hint=self.hint) from None
        self.start_reading()

    def _session_config(self, instructions: str, tools: Sequence[ToolSpec]) -> dict[str, Any]:
        settings = self.settings
        detection: dict[str, Any] = {"type": settings.turn_detection, "create_response": True,
                                     "interrupt_response": True}
        if settings.turn_detection == "server_vad":
            detection.update(threshold=settings.vad_threshold, silence_duration_ms=settings.vad_silence_duration_ms,
                             prefix_padding_ms=settings.vad_prefix_padding_ms)
        else:
            detection["eagerness"] = settings.eagerness
        audio_in: dict[str, Any] = {"format": {"type": "audio/pcmu"},
                                    # local: none on the server (LocalTurns commits each question)
                                    "turn_detection": None if self._local is not None else detection}
        if settings.transcription_model:
            audio_in["transcription"] = {"model": settings.transcription_model}
            if language := self.language.split("-")[0].lower():
                audio_in["transcription"]["language"] = language
        config: dict[str, Any] = {
            "type": "realtime", "output_modalities": ["audio"], "instructions": instructions,
            "audio": {"input": audio_in, "output": {"format": {"type": "audio/pcmu"}, "voice": settings.voice}}}
        if tools:
            config["tools"] = [{"type": "function", "name": tool.name, "description": tool.description,
                                "parameters": dict(tool.parameters)} for tool in tools]
            config["tool_choice"] = "auto"
        return config

    # -- to the model ---------------------------------------------------------------------------------
    def send_audio(self, mulaw: bytes) -> None:
        # 50 appends a second: sent as the event's JSON directly, not through the SDK's typed
        # (and validated) path, which costs far more than the audio's own encoding.
        self._send_raw({"type": "input_audio_buffer.append", "audio": base64.b64encode(mulaw).decode("ascii")})
        if self._local is None:
            return
        for turn in self._local.hear(mulaw):
            if turn is Turn.STARTED:  # as the server's speech_started: a barge-in if an answer plays
                self._events.put(EngineEvent(EngineEventKind.SPEECH_STARTED))
            elif turn is Turn.ENDED:
                self._send_raw({"type": "input_audio_buffer.commit"})
                self._send_raw({"type": "response.create"})
            else:  # a quiet line: the server need not keep it
                self._send_raw({"type": "input_audio_buffer.clear"})

    def send_text(self, text: str) -> None:
        self._send_raw({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        self._send_raw({"type": "response.create"})

    def send_tool_result(self, call: ToolCall, output: str) -> None:
        self._send_raw({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call.id, "output": output}})
        self._send_raw({"type": "response.create"})

    def answer_cut(self, played_seconds: float) -> None:
        """Stop what is left of the answer and trim its items to what the caller heard: the
        model then knows where it was interrupted."""
        with self._lock:
            responding, items = self._responding, [list(item) for item in self._items]
            self._items = []
        if responding:
            self._send_raw({"type": "response.cancel"})
        left_ms = int(played_seconds * 1000)
        for item_id, audio_ms in items:
            if left_ms < audio_ms:
                self._send_raw({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                                "audio_end_ms": max(0, left_ms)})
            left_ms = max(0, left_ms - audio_ms)

    def _send_raw(self, event: dict[str, Any]) -> None:
        try:
            self._connection.send_raw(json.dumps(event))
        except Exception as exc:
            raise ProviderUnavailable(f"{NAME}: the connection is gone: {str(exc)[:200]}", provider=NAME) from None

    # -- from the model -------------------------------------------------------------------------------
    def _receive(self) -> Iterator[EngineEvent | None]:
        for event in self._connection:
            yield from self._events_of(event)

    def _events_of(self, event: Any) -> Iterator[EngineEvent | None]:
        kind = getattr(event, "type", None)
        if kind == "response.output_audio.delta":
            try:
                audio = base64.b64decode(event.delta or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                audio = b""
            if not audio:
                self._skip("an audio delta without base64 audio")
                return
            with self._lock:
                if not self._items or self._items[-1][0] != event.item_id:
                    self._items.append([event.item_id, 0])
                self._items[-1][1] += len(audio) // 8  # 8 μ-law bytes a millisecond
            yield EngineEvent(EngineEventKind.AUDIO, audio=audio)
        elif kind == "response.output_audio_transcript.done":
            if text := _text(getattr(event, "transcript", "")):
                yield EngineEvent(EngineEventKind.ASSISTANT_SAID, text=text)
        elif kind == "conversation.item.input_audio_transcription.completed":
            if text := _text(getattr(event, "transcript", "")):
                yield EngineEvent(EngineEventKind.CALLER_SAID, text=text)
        elif kind == "input_audio_buffer.speech_started":
            yield EngineEvent(EngineEventKind.SPEECH_STARTED)
        elif kind == "response.created":
            with self._lock:
                self._responding, self._items = True, []
        elif kind == "response.done":
            yield from self._response_done(event.response)
        elif kind == "error":
            error = getattr(event, "error", None)
            code = str(getattr(error, "code", None) or getattr(error, "type", None) or "error")
            message = f"{code}: {str(getattr(error, 'message', '') or '')[:300]}"
            yield EngineEvent(EngineEventKind.ERROR, text=message,
                              fatal=code in _FATAL_CODES or getattr(error, "type", "") == "server_error")
        else:
            yield None  # session, buffer and item bookkeeping the call does not need

    def _response_done(self, response: Any) -> Iterator[EngineEvent | None]:
        with self._lock:
            self._responding = False
        status = getattr(response, "status", "")
        if status == "failed":
            details = getattr(response, "status_details", None)
            error = event_error(getattr(details, "error", None), self.hint, "response failed")
            yield EngineEvent(EngineEventKind.ERROR, text=str(error), fatal=True)
            return
        for item in getattr(response, "output", None) or []:
            if getattr(item, "type", "") == "function_call":
                yield EngineEvent(EngineEventKind.TOOL_CALL, tool=ToolCall(
                    str(getattr(item, "name", "") or "")[:100], _arguments(getattr(item, "arguments", "")),
                    id=str(getattr(item, "call_id", "") or "")[:100]))
        yield EngineEvent(EngineEventKind.DONE)

    def close(self) -> None:
        super().close()
        self._close_connection()

    def _close_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # already gone
                pass


class Turn(enum.Enum):
    STARTED = "started"   # the caller began to speak
    ENDED = "ended"       # and stopped: the question is complete
    QUIET = "quiet"       # nobody has spoken for a while


class LocalTurns:
    """voiceassist's own end-of-speech detection for the Realtime session (``turn_detection =
    local``): WebRTC's voice detector on the caller's 20 ms μ-law frames. 200 ms of voice start a
    turn, ``silence_ms`` of quiet end it; each second of quiet outside a turn is reported too."""

    START_FRAMES = 10
    QUIET_FRAMES = 50

    def __init__(self, silence_ms: int) -> None:
        from ..audio.conversion import ulaw_to_pcm
        from ..audio.endpointing import webrtc_detector

        self._detector = webrtc_detector(2, 8000)
        self._to_pcm = ulaw_to_pcm
        self._end_frames = max(1, silence_ms // 20)
        self._pending = b""
        self._voiced = self._quiet = 0
        self.speaking = False

    def hear(self, mulaw: bytes) -> list[Turn]:
        turns: list[Turn] = []
        data = self._pending + mulaw
        whole = len(data) // 160 * 160
        self._pending = data[whole:]
        for start in range(0, whole, 160):
            voiced = self._detector.is_speech(self._to_pcm(data[start:start + 160], 8000, 8000))
            self._voiced, self._quiet = (self._voiced + 1, 0) if voiced else (0, self._quiet + 1)
            if not self.speaking and self._voiced >= self.START_FRAMES:
                self.speaking = True
                turns.append(Turn.STARTED)
            elif self.speaking and self._quiet >= self._end_frames:
                self.speaking = False
                turns.append(Turn.ENDED)
            elif not self.speaking and self._quiet and self._quiet % self.QUIET_FRAMES == 0:
                turns.append(Turn.QUIET)
        return turns


def _text(value: Any) -> str:
    return value.strip()[:MAX_TEXT_CHARS] if isinstance(value, str) else ""


def _arguments(raw: Any) -> dict[str, Any]:
    """A function call's arguments (a JSON object as text); anything else is no arguments (the
    call's decision checks them against the tool's schema)."""
    try:
        value = json.loads(raw) if isinstance(raw, str) and len(raw) <= 20000 else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _connect_error(exc: Exception, timeout: float, hint: str) -> ProviderError:
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(f"{NAME}: no connection within {timeout:.1f} s", provider=NAME)
    return map_sdk_error(NAME, exc, hint=hint)
