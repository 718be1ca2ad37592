"""OpenAI Realtime API over WebSocket (``GET /v1/realtime?model=…``): text-to-speech, and a
speech-to-speech conversation partner.

Speaks the GA event protocol, every server event in the shape the openai SDK parses
(``openai.types.realtime``). ``session.created`` on connect; ``session.update`` →
``session.updated`` (the session is merged field by field; ``session.type`` is required, as on
the real API).

**Text-to-speech** (no ``audio.input.turn_detection``): ``conversation.item.create`` →
``conversation.item.added``; ``response.create`` → ``response.created``,
``response.output_audio.delta`` (base64 audio in the session's output format, here G.711 μ-law),
``response.output_audio.done``, ``response.done``. The audio is the tone for the text, like the
other TTS emulators; ``script`` (Fail, Hang, Drop, Cut, Garbage) breaks it.

**Conversation** (``audio.input.turn_detection`` is ``server_vad`` or ``semantic_vad``, caller
audio by ``input_audio_buffer.append``, G.711 μ-law 8 kHz with ``audio.input.format`` audio/pcmu,
else 24 kHz PCM16), modelled on ai_server.py. Not a model: a level detector on 20 ms frames finds
the caller's speech (``input_audio_buffer.speech_started``) and its end after
``silence_duration_ms`` of quiet (``speech_stopped``, ``committed``, the user item's
``conversation.item.added``/``done``, and with ``audio.input.transcription`` set,
``conversation.item.input_audio_transcription.delta``/``completed``). The question is named by the
marker tone at its start (``transcripts``, frequency → text), else "What are your opening hours?".
Unless ``create_response`` is false, ``answer_delay`` later comes the answer
``Answer N: you asked, <question>``: ``response.created``, ``response.output_item.added``,
``conversation.item.added``, ``response.content_part.added``, ``response.output_audio_transcript.delta``
pieces, ``response.output_audio.delta`` 200 ms chunks of the answer's tone (``tone_for(reply)``,
``answer_seconds`` long), ``response.output_audio.done``, ``response.output_audio_transcript.done``,
``response.content_part.done``, ``response.output_item.done``, ``conversation.item.done``,
``response.done``, all sent as fast as they are made, as the real API does; the answer "plays"
until then + ``answer_seconds``. The caller talking 200 ms over it is a barge-in
(``speech_started``; with ``interrupt_response``, a response still being made is cancelled).

Without turn detection (``turn_detection`` null: the client finds where the caller stops), the
caller's audio is kept from its first voiced frame and becomes the question at the client's
``input_audio_buffer.commit``; its ``response.create`` gets the answer. ``generating_seconds``
keeps an answer's response active that long after its audio (``response.done`` comes with the
first client event after then), as a long answer still being made would be.

A question (or a text message) that is a key of ``tool_calls`` (question → (function, args)), in a
session with function tools, gets a ``function_call`` item instead of audio; the client's
``function_call_output`` item and ``response.create`` get ``Answer N: <output>``. A
``response.create`` after a text message gets ``Answer N: you said, <text>``; with nothing to
answer, ``Answer N: <opening>``. ``response.cancel`` and ``conversation.item.truncate`` answer as the
real API does, errors included (``response_cancel_not_active``,
``conversation_already_has_active_response``, ``Audio content of Xms is already shorter than Yms``).

Faults (cleared by :meth:`reset`): ``close_at_question`` (close the socket, code 1000, when
question N ends), ``fatal_at_question`` (a ``server_error`` event, then close code 1011),
``silent`` (transcribe, never answer), ``stall_at_question`` (begin answer N: a transcript delta
and 0.4 s of audio, then nothing), and the ``script`` actions, which also break conversation
answers. Each connection's record (``connections``) holds ``path``, ``headers``, ``events`` (all
client events but the audio appends, which are counted) and what the conversation saw.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from . import mulaw
from .ai_server import answer_ulaw, ulaw_to_linear
from .base import Action, Cut, Drop, Fail, Garbage, Hang
from .openai_api import tone_for, tone_pcm
from .speech import marker_strength

_ERROR_CODES = {429: ("rate_limit_exceeded", "rate_limit_error"), 500: ("server_error", "server_error"),
                503: ("server_error", "server_error"), 400: ("invalid_request", "invalid_request_error")}

DEFAULT_QUESTION = "What are your opening hours?"
FRAME_SECONDS = 0.02        # the level detector's frame
CHUNK_SECONDS = 0.2         # one response.output_audio.delta
VOICED_LEVEL = 256          # mean |sample| of a voiced frame
BARGE_IN_FRAMES = 10        # 200 ms of the caller over the playing answer
STALL_SECONDS = 0.4         # what a stalled answer sends
HEARD_FRAMES = 500          # the first 10 s of a question are kept: its marker is at the start


class _Closed(Exception):
    """The emulator closed the connection on purpose."""


@dataclass
class _Response:
    """A response being made."""

    id: str
    item: dict[str, Any]
    reply: str
    said: str = ""              # the transcript sent so far
    audio_ms: int = 0           # the audio sent so far


@dataclass
class _Conversation:
    """One connection's conversation state."""

    voiced_run: int = 0
    quiet_run: int = 0
    position_ms: int = 0                        # caller audio received, in ms
    partial: bytes = b""                        # less than a frame, kept for the next append
    recent: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=50))
    heard: list[np.ndarray] = field(default_factory=list)
    in_question: bool = False
    user_item: str = ""
    speaking_until: float = 0.0                 # time.monotonic() when the last answer stops playing
    answers: int = 0
    pending: tuple[str, str] | None = None      # ("asked" | "said" | "output", text) not yet answered
    active: _Response | None = None
    last_item: str | None = None
    audio_items: dict[str, int] = field(default_factory=dict)  # assistant item id -> audio ms
    finish_at: float = 0.0                      # generating_seconds: when the active response is done


class RealtimeEmulator:
    def __init__(self) -> None:
        self.transcripts: dict[float, str] = {}   # marker tone (Hz) -> the question it names
        self.script: deque[Action] = deque()
        self.connections: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.reset()
        self.server = serve(self._handle, "127.0.0.1", 0, process_request=self._authorize,
                            compression=None, max_size=None)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        """What the openai SDK takes as ``base_url``; it derives ``ws://…/v1/realtime`` from it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, *actions: Action) -> None:
        with self._lock:
            self.script.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.connections.clear()
            self.seconds = 1.5                         # text-to-speech audio length
            self.latency = 0.0                         # text-to-speech: before the audio
            self.answer_seconds = 2.0                  # conversation: each answer's audio
            self.answer_delay = 0.15                   # conversation: from the end of the question
            self.generating_seconds = 0.0              # conversation: response.done this long after the audio
            self.opening = "How can I help?"           # the answer to a response.create with nothing to answer
            self.tool_calls: dict[str, tuple[str, dict[str, Any]]] = {}  # question -> (function, arguments)
            self.close_at_question: int | None = None  # close the connection when question N ends
            self.fatal_at_question: int | None = None  # a server_error event and close 1011 instead of answer N
            self.silent = False                        # transcribe the question, never answer it
            self.stall_at_question: int | None = None  # begin answer N, then say nothing more

    def close(self) -> None:
        self.server.shutdown()

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def _authorize(self, connection: ServerConnection, request: Any) -> Any:
        if not request.path.startswith("/v1/realtime"):
            return connection.respond(404, "Not Found\n")
        action = None
        with self._lock:
            if self.script and isinstance(self.script[0], Fail) and self.script[0].status in (401, 403):
                action = self.script.popleft()
        if action is not None or not request.headers.get("Authorization", "").startswith("Bearer "):
            return connection.respond(401, "Unauthorized\n")
        return None

    def _send(self, connection: ServerConnection, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self._id("event"))
        connection.send(json.dumps(event))

    def _error(self, connection: ServerConnection, code: str | None, message: str,
               kind: str = "invalid_request_error", event_id: str | None = None, param: str | None = None) -> None:
        self._send(connection, {"type": "error", "error": {"type": kind, "code": code, "message": message,
                                                            "param": param, "event_id": event_id}})

    def _action(self) -> Action | None:
        with self._lock:
            return self.script.popleft() if self.script else None

    # -- one connection -------------------------------------------------------------------------
    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        record: dict[str, Any] = {
            "path": request.path, "headers": {k.lower(): v for k, v in request.headers.raw_items()},
            "events": [],             # client events, but input_audio_buffer.append (counted in "appends")
            "session": {},            # the session as configured by the updates
            "appends": 0, "audio_bytes": 0,
            "questions": [],          # what the caller asked, in order
            "barge_ins": [],          # time.monotonic() of each speech_started over a playing answer
            "cancels": [],            # time.monotonic() of each response.cancel
            "truncates": [],          # (item_id, audio_end_ms) of each conversation.item.truncate
            "function_outputs": [],   # (call_id, output) of each function_call_output item
            "texts": [],              # the input_text of each user message item
            "calls": [],              # (call_id, name, arguments) of each function call made
            "replies": [],            # the text of each answer begun
        }
        with self._lock:
            self.connections.append(record)
        session: dict[str, Any] = {"type": "realtime", "model": "gpt-realtime-2.1-mini", "output_modalities": ["audio"],
                                   "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}}}
        record["session"] = session
        state = _Conversation()
        text = ""
        self._send(connection, {"type": "session.created", "session": session})
        try:
            for message in connection:
                try:
                    event = json.loads(message)
                except ValueError:
                    self._error(connection, "invalid_json", "The server could not parse the event as JSON.")
                    continue
                if not isinstance(event, dict):
                    self._error(connection, "invalid_value", "An event must be a JSON object.")
                    continue
                kind = event.get("type")
                event_id = event.get("event_id")
                if state.active is not None and state.finish_at and time.monotonic() >= state.finish_at:
                    self._finish(connection, session, state, "completed")  # generating_seconds have passed
                if kind == "input_audio_buffer.append":
                    record["appends"] += 1
                    try:
                        audio = base64.b64decode(str(event.get("audio", "")), validate=True)
                    except (binascii.Error, ValueError):
                        self._error(connection, "invalid_value", "Invalid 'audio'. Expected base64-encoded audio.",
                                    event_id=event_id, param="audio")
                        continue
                    record["audio_bytes"] += len(audio)
                    self._audio(connection, record, session, state, audio)
                    continue
                record["events"].append(event)
                if kind == "session.update":
                    update = event.get("session") or {}
                    if "type" not in update:
                        self._error(connection, "missing_required_parameter",
                                    "Missing required parameter: 'session.type'.", event_id=event_id,
                                    param="session.type")
                        continue
                    _merge(session, update)
                    self._send(connection, {"type": "session.updated", "session": session})
                elif kind == "conversation.item.create":
                    item = dict(event.get("item") or {})
                    text = self._item(connection, record, state, item)
                elif kind == "response.create":
                    if _turn_detection(session) is None and not record["appends"]:
                        if not self._tts(connection, session, text):
                            return
                    elif state.active is not None:
                        self._error(connection, "conversation_already_has_active_response",
                                    "Conversation already has an active response in progress: "
                                    f"{state.active.id}. Wait until the response is finished before creating "
                                    "a new one.",
                                    event_id=event_id)
                    else:
                        time.sleep(self.answer_delay)
                        self._turn(connection, record, session, state)
                elif kind == "response.cancel":
                    record["cancels"].append(time.monotonic())
                    if state.active is None:
                        self._error(connection, "response_cancel_not_active",
                                    "Cancellation failed: no active response found", event_id=event_id)
                    else:
                        self._finish(connection, session, state, "cancelled", "client_cancelled")
                elif kind == "conversation.item.truncate":
                    self._truncate(connection, record, state, event)
                elif kind == "conversation.item.delete":
                    item_id = str(event.get("item_id"))
                    state.audio_items.pop(item_id, None)
                    self._send(connection, {"type": "conversation.item.deleted", "item_id": item_id})
                elif kind == "input_audio_buffer.commit":
                    if state.in_question:
                        self._end_question(connection, record, session, state, vad=False)
                    else:
                        self._error(connection, "input_audio_buffer_commit_empty",
                                    "Error committing input audio buffer: buffer too small. Expected at least "
                                    "100ms of audio, but buffer only has 0.00ms of audio.", event_id=event_id)
                elif kind == "input_audio_buffer.clear":
                    state.in_question, state.heard, state.partial = False, [], b""
                    self._send(connection, {"type": "input_audio_buffer.cleared"})
                else:
                    self._error(connection, "unknown_event", f"unknown {kind}", event_id=event_id)
        except (_Closed, ConnectionClosed):
            return
        except Exception:  # a bug here: say so, rather than leave the client waiting
            record["crash"] = traceback.format_exc()
            print(f"RealtimeEmulator: {record['crash']}", file=sys.stderr)
            try:
                connection.close(code=1011, reason="emulator crashed")
            except Exception:
                pass

    def _item(self, connection: ServerConnection, record: dict[str, Any], state: _Conversation,
              item: dict[str, Any]) -> str:
        """A client's conversation.item.create; gives its text (what TTS reads)."""
        item_id = str(item.get("id") or self._id("item"))
        item.update({"id": item_id, "object": "realtime.item", "status": "completed"})
        text = "".join(str(part.get("text") or "") for part in item.get("content") or [] if isinstance(part, dict))
        if item.get("type") == "message" and item.get("role") == "user":
            record["texts"].append(text)
            state.pending = ("said", text)
        elif item.get("type") == "function_call_output":
            output = str(item.get("output", ""))
            record["function_outputs"].append((str(item.get("call_id", "")), output))
            state.pending = ("output", output)
        self._send(connection, {"type": "conversation.item.added", "previous_item_id": state.last_item, "item": item})
        self._send(connection, {"type": "conversation.item.done", "previous_item_id": state.last_item, "item": item})
        state.last_item = item_id
        return text

    # -- the caller's audio ---------------------------------------------------------------------
    def _audio(self, connection: ServerConnection, record: dict[str, Any], session: dict[str, Any],
               state: _Conversation, audio: bytes) -> None:
        fmt = _format(session, "input")
        rate, width = (8000, 1) if fmt == "audio/pcmu" else (24000, 2)
        frame = int(rate * FRAME_SECONDS) * width
        data = state.partial + audio
        whole = len(data) // frame * frame
        state.partial = data[whole:]
        for start in range(0, whole, frame):
            chunk = data[start:start + frame]
            samples = ulaw_to_linear(chunk) if width == 1 else np.frombuffer(chunk, dtype="<i2").astype(np.float64)
            self._frame(connection, record, session, state, samples, rate)

    def _frame(self, connection: ServerConnection, record: dict[str, Any], session: dict[str, Any],
               state: _Conversation, samples: np.ndarray, rate: int) -> None:
        state.position_ms += int(FRAME_SECONDS * 1000)
        voiced = float(np.abs(samples).mean()) > VOICED_LEVEL
        if voiced:
            state.voiced_run, state.quiet_run = state.voiced_run + 1, 0
        else:
            state.quiet_run, state.voiced_run = state.quiet_run + 1, 0
        state.recent.append(samples)
        detection = _turn_detection(session)
        if detection is None:  # the client finds where the caller stops, and commits the buffer
            if voiced and not state.in_question:
                run = min(state.voiced_run, len(state.recent))
                state.in_question, state.heard = True, list(state.recent)[-run:]
                state.user_item = self._id("item")
            elif state.in_question and len(state.heard) < HEARD_FRAMES:
                state.heard.append(samples)
            return
        now = time.monotonic()
        if voiced and not state.in_question and now < state.speaking_until and state.voiced_run >= BARGE_IN_FRAMES:
            state.speaking_until = 0.0  # the caller talks over the answer
            record["barge_ins"].append(now)
        if voiced and not state.in_question and now >= state.speaking_until:
            run = min(state.voiced_run, len(state.recent))
            state.in_question, state.heard = True, list(state.recent)[-run:]
            state.user_item = self._id("item")
            start_ms = state.position_ms - run * int(FRAME_SECONDS * 1000)
            padding = int(detection.get("prefix_padding_ms") or 300) if detection.get("type") == "server_vad" else 0
            self._send(connection, {"type": "input_audio_buffer.speech_started", "item_id": state.user_item,
                                    "audio_start_ms": max(0, start_ms - padding)})
            if state.active is not None and detection.get("interrupt_response", True) is not False:
                self._finish(connection, session, state, "cancelled", "turn_detected")
            return
        if state.in_question:
            if len(state.heard) < HEARD_FRAMES:
                state.heard.append(samples)
            silence_ms = int(detection.get("silence_duration_ms") or 500)
            if state.quiet_run * FRAME_SECONDS * 1000 >= silence_ms:
                self._end_question(connection, record, session, state, vad=True, rate=rate)

    def _end_question(self, connection: ServerConnection, record: dict[str, Any], session: dict[str, Any],
                      state: _Conversation, *, vad: bool, rate: int | None = None) -> None:
        if rate is None:
            rate = 8000 if _format(session, "input") == "audio/pcmu" else 24000
        state.in_question = False
        question = self._question(np.concatenate(state.heard) if state.heard else np.zeros(0), rate)
        state.heard = []
        record["questions"].append(question)
        number = len(record["questions"])
        if self.close_at_question == number:
            connection.close()
            raise _Closed
        item_id = state.user_item
        if vad:
            self._send(connection, {"type": "input_audio_buffer.speech_stopped", "item_id": item_id,
                                    "audio_end_ms": state.position_ms})
        self._send(connection, {"type": "input_audio_buffer.committed", "item_id": item_id,
                                "previous_item_id": state.last_item})
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        self._send(connection, {"type": "conversation.item.added", "previous_item_id": state.last_item, "item": item})
        self._send(connection, {"type": "conversation.item.done", "previous_item_id": state.last_item, "item": item})
        state.last_item = item_id
        if self.fatal_at_question == number:
            self._error(connection, "server_error", "The server had an error while processing your request. "
                        "Sorry about that!", kind="server_error")
            connection.close(code=1011, reason="server error")
            raise _Closed
        transcription = (session.get("audio") or {}).get("input", {}).get("transcription")
        if isinstance(transcription, dict) and transcription.get("model"):
            self._send(connection, {"type": "conversation.item.input_audio_transcription.delta", "item_id": item_id,
                                    "content_index": 0, "delta": question})
            self._send(connection, {"type": "conversation.item.input_audio_transcription.completed",
                                    "item_id": item_id, "content_index": 0, "transcript": question,
                                    "usage": {"type": "tokens", "input_tokens": 20, "output_tokens": 10,
                                              "total_tokens": 30, "input_token_details": {"audio_tokens": 20,
                                                                                          "text_tokens": 0}}})
        state.pending = ("asked", question)
        if self.silent:
            return
        if self.stall_at_question == number:
            time.sleep(self.answer_delay)
            self._stall(connection, record, session, state, question)
            return
        detection = _turn_detection(session)
        if detection is not None and detection.get("create_response", True) is not False and state.active is None:
            time.sleep(self.answer_delay)
            self._turn(connection, record, session, state)

    def _question(self, pcm: np.ndarray, rate: int) -> str:
        for frequency, text in self.transcripts.items():
            if marker_strength(pcm, rate, frequency) > 0.5:
                return text
        return DEFAULT_QUESTION

    # -- the model's side -----------------------------------------------------------------------
    def _turn(self, connection: ServerConnection, record: dict[str, Any], session: dict[str, Any],
              state: _Conversation) -> None:
        """A response to what is pending: a function call, or an answer in audio."""
        kind, text = state.pending or ("", "")
        state.pending = None
        has_functions = any(isinstance(t, dict) and t.get("type") == "function" for t in session.get("tools") or [])
        action = self._action()
        if kind in ("asked", "said") and has_functions and text in self.tool_calls:
            if self._broken(connection, state, action):
                return
            self._function_call(connection, record, state, *self.tool_calls[text])
            return
        number = state.answers + 1
        if kind == "asked":
            reply = f"Answer {number}: you asked, {text}"
        elif kind == "said":
            reply = f"Answer {number}: you said, {text}"
        elif kind == "output":
            reply = f"Answer {number}: {text}"
        else:
            reply = f"Answer {number}: {self.opening}"
        if self._broken(connection, state, action):
            return
        self._answer(connection, record, session, state, reply, action)

    def _broken(self, connection: ServerConnection, state: _Conversation, action: Action | None) -> bool:
        """A scripted fault instead of the response's start; True when there is no response."""
        if isinstance(action, Hang):
            time.sleep(action.seconds)
            connection.close()
            raise _Closed
        if isinstance(action, Drop):
            connection.close()
            raise _Closed
        if isinstance(action, Fail):
            code, kind = _ERROR_CODES.get(action.status, ("server_error", "server_error"))
            if action.body:
                code, kind = action.body.get("code", code), action.body.get("type", kind)
            self._error(connection, code, f"emulated {action.status}", kind=kind)
            return True
        if isinstance(action, Garbage):
            response = {"id": self._id("resp"), "object": "realtime.response", "status": "in_progress", "output": []}
            self._send(connection, {"type": "response.created", "response": response})
            self._send(connection, {"type": "response.done", "response": {
                **response, "status": "failed", "status_details": {"type": "failed", "error": {
                    "type": "server_error", "code": "server_error", "message": "The server had an error"}}}})
            return True
        return False

    def _begin(self, connection: ServerConnection, session: dict[str, Any], state: _Conversation,
               reply: str) -> _Response:
        """response.created and an assistant audio message item, content part added."""
        response = _Response(id=self._id("resp"), reply=reply, item={
            "id": self._id("item"), "object": "realtime.item", "type": "message", "role": "assistant",
            "status": "in_progress", "content": []})
        state.active = response
        self._send(connection, {"type": "response.created",
                                "response": self._response(session, response.id, "in_progress")})
        self._send(connection, {"type": "response.output_item.added", "response_id": response.id, "output_index": 0,
                                "item": response.item})
        self._send(connection, {"type": "conversation.item.added", "previous_item_id": state.last_item,
                                "item": response.item})
        state.last_item = response.item["id"]
        self._send(connection, {"type": "response.content_part.added", **self._where(response),
                                "part": {"type": "audio", "transcript": ""}})
        return response

    def _say(self, connection: ServerConnection, response: _Response, pieces: list[str]) -> None:
        for piece in pieces:
            response.said += piece
            self._send(connection, {"type": "response.output_audio_transcript.delta", **self._where(response),
                                    "delta": piece})

    def _play(self, connection: ServerConnection, session: dict[str, Any], state: _Conversation,
              response: _Response, seconds: float, cut: bool = False) -> None:
        if _format(session, "output") == "audio/pcmu":
            audio, step, per_ms = answer_ulaw(response.reply, seconds), int(CHUNK_SECONDS * 8000), 8
        else:
            audio, step = tone_pcm(tone_for(response.reply), seconds, 24000), int(CHUNK_SECONDS * 24000) * 2
            per_ms = 48
        for start in range(0, len(audio), step):
            piece = audio[start:start + step]
            self._send(connection, {"type": "response.output_audio.delta", **self._where(response),
                                    "delta": base64.b64encode(piece).decode("ascii")})
            response.audio_ms += len(piece) // per_ms
            state.audio_items[response.item["id"]] = response.audio_ms
            if cut:
                connection.close()
                raise _Closed
        # The caller hears it in real time, after what is still playing.
        state.speaking_until = max(state.speaking_until, time.monotonic()) + response.audio_ms / 1000

    def _answer(self, connection: ServerConnection, record: dict[str, Any], session: dict[str, Any],
                state: _Conversation, reply: str, action: Action | None) -> None:
        state.answers += 1
        record["replies"].append(reply)
        response = self._begin(connection, session, state, reply)
        self._say(connection, response, re.findall(r"\S+\s*", reply))
        self._play(connection, session, state, response, self.answer_seconds, cut=isinstance(action, Cut))
        if self.generating_seconds:  # still being made: done at the first client event after then
            state.finish_at = time.monotonic() + self.generating_seconds
            return
        self._finish(connection, session, state, "completed")

    def _stall(self, connection: ServerConnection, record: dict[str, Any], session: dict[str, Any],
               state: _Conversation, question: str) -> None:
        state.pending = None
        state.answers += 1
        reply = f"Answer {state.answers}: you asked, {question}"
        record["replies"].append(reply)
        response = self._begin(connection, session, state, reply)
        self._say(connection, response, re.findall(r"\S+\s*", reply)[:2])
        self._play(connection, session, state, response, STALL_SECONDS)

    def _finish(self, connection: ServerConnection, session: dict[str, Any], state: _Conversation, status: str,
                reason: str | None = None) -> None:
        """The end of the active audio response: completed, or cancelled part way."""
        response = state.active
        assert response is not None
        state.active = None
        state.finish_at = 0.0
        where = self._where(response)
        self._send(connection, {"type": "response.output_audio.done", **where})
        self._send(connection, {"type": "response.output_audio_transcript.done", **where, "transcript": response.said})
        self._send(connection, {"type": "response.content_part.done", **where,
                                "part": {"type": "audio", "transcript": response.said}})
        response.item.update({"status": "completed" if status == "completed" else "incomplete",
                              "content": [{"type": "output_audio", "transcript": response.said}]})
        self._send(connection, {"type": "response.output_item.done", "response_id": response.id, "output_index": 0,
                                "item": response.item})
        self._send(connection, {"type": "conversation.item.done", "previous_item_id": None, "item": response.item})
        details = {"type": status, "reason": reason} if status != "completed" else None
        self._send(connection, {"type": "response.done", "response": self._response(
            session, response.id, status, [response.item], details)})

    def _function_call(self, connection: ServerConnection, record: dict[str, Any], state: _Conversation,
                       name: str, arguments: dict[str, Any]) -> None:
        response_id, call_id, item_id = self._id("resp"), self._id("call"), self._id("item")
        args = json.dumps(arguments)
        record["calls"].append((call_id, name, args))
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "function_call",
                                "status": "in_progress", "name": name, "call_id": call_id, "arguments": ""}
        self._send(connection, {"type": "response.created", "response": {
            "id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}})
        self._send(connection, {"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                                "item": dict(item)})
        self._send(connection, {"type": "conversation.item.added", "previous_item_id": state.last_item,
                                "item": dict(item)})
        state.last_item = item_id
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "call_id": call_id}
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            self._send(connection, {"type": "response.function_call_arguments.delta", **where, "delta": piece})
        self._send(connection, {"type": "response.function_call_arguments.done", **where, "name": name,
                                "arguments": args})
        item.update({"status": "completed", "arguments": args})
        self._send(connection, {"type": "response.output_item.done", "response_id": response_id, "output_index": 0,
                                "item": item})
        self._send(connection, {"type": "conversation.item.done", "previous_item_id": None, "item": item})
        self._send(connection, {"type": "response.done", "response": {
            "id": response_id, "object": "realtime.response", "status": "completed", "output": [item],
            "output_modalities": ["audio"]}})

    def _truncate(self, connection: ServerConnection, record: dict[str, Any], state: _Conversation,
                  event: dict[str, Any]) -> None:
        item_id, end_ms = str(event.get("item_id")), event.get("audio_end_ms")
        content_index = event.get("content_index", 0)
        record["truncates"].append((item_id, end_ms))
        length = state.audio_items.get(item_id)
        if length is None:
            self._error(connection, None, "Only model output audio messages can be truncated",
                        event_id=event.get("event_id"))
        elif not isinstance(end_ms, int) or end_ms < 0:
            self._error(connection, "invalid_value", "Invalid 'audio_end_ms'.", event_id=event.get("event_id"),
                        param="audio_end_ms")
        elif end_ms > length:
            self._error(connection, "invalid_value",
                        f"Audio content of {length}ms is already shorter than {end_ms}ms",
                        event_id=event.get("event_id"))
        else:
            state.audio_items[item_id] = end_ms
            self._send(connection, {"type": "conversation.item.truncated", "item_id": item_id,
                                    "content_index": content_index, "audio_end_ms": end_ms})

    @staticmethod
    def _where(response: _Response) -> dict[str, Any]:
        return {"response_id": response.id, "item_id": response.item["id"], "output_index": 0, "content_index": 0}

    @staticmethod
    def _response(session: dict[str, Any], response_id: str, status: str, output: list[dict[str, Any]] | None = None,
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
        out = (session.get("audio") or {}).get("output") or {}
        response: dict[str, Any] = {
            "id": response_id, "object": "realtime.response", "status": status, "output": output or [],
            "output_modalities": ["audio"],
            "audio": {"output": {"format": out.get("format") or {"type": "audio/pcm", "rate": 24000},
                                 "voice": out.get("voice") or "marin"}}}
        if details:
            response["status_details"] = details
        return response

    # -- text-to-speech -------------------------------------------------------------------------
    def _tts(self, connection: ServerConnection, session: dict[str, Any], text: str) -> bool:
        action = self._action()
        if isinstance(action, Hang):
            time.sleep(action.seconds)
            connection.close()
            return False
        if isinstance(action, Drop):
            connection.close()
            return False
        if isinstance(action, Fail):
            code, kind = _ERROR_CODES.get(action.status, ("server_error", "server_error"))
            if action.body:
                code, kind = action.body.get("code", code), action.body.get("type", kind)
            self._send(connection, {"type": "error", "error": {"type": kind, "code": code,
                                                                "message": f"emulated {action.status}"}})
            return True
        response_id, item_id = self._id("resp"), self._id("item")
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}
        self._send(connection, {"type": "response.created", "response": response})
        if isinstance(action, Garbage):
            self._send(connection, {"type": "response.done", "response": {
                **response, "status": "failed", "status_details": {"type": "failed", "error": {
                    "type": "server_error", "code": "server_error", "message": "The server had an error"}}}})
            return True
        if self.latency:
            time.sleep(self.latency)
        if _format(session, "output") == "audio/pcmu":
            audio, chunk = mulaw.encode(tone_pcm(tone_for(text), self.seconds, 8000)), 1600
        else:
            audio, chunk = tone_pcm(tone_for(text), self.seconds, 24000), 9600
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        for index, start in enumerate(range(0, len(audio), chunk)):
            self._send(connection, {"type": "response.output_audio.delta", **where,
                                    "delta": base64.b64encode(audio[start:start + chunk]).decode()})
            if isinstance(action, Cut) and index == 0:
                connection.close()
                return False
        self._send(connection, {"type": "response.output_audio.done", **where})
        self._send(connection, {"type": "response.done", "response": {**response, "status": "completed"}})
        return True


def _merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    """session.update: objects merged field by field, anything else (lists, null) replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _format(session: dict[str, Any], direction: str) -> str:
    fmt = ((session.get("audio") or {}).get(direction) or {}).get("format") or {}
    return str(fmt.get("type") or "audio/pcm")


def _turn_detection(session: dict[str, Any]) -> dict[str, Any] | None:
    detection = ((session.get("audio") or {}).get("input") or {}).get("turn_detection")
    if isinstance(detection, dict) and detection.get("type") in ("server_vad", "semantic_vad"):
        return detection
    return None
