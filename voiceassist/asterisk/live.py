"""The real-time route: ``AGI(agi://host:port/voiceassist-live,<exten>,<linkedid>)``.

The AGI session stays the control plane (the toolkit stays synchronous, and the call returns to
the dialplan afterwards); the audio travels on a second connection that Asterisk opens to our
media server (AudioSocket or its WebSocket channel, ``[live] transport``). The two are tied
together by a per-call id:

1. the route validates the call like every route and takes one of ``[live] max_calls`` (else
   the caller hears the busy prompt);
2. it *announces* a fresh random id (122 bits from ``uuid4``) to this process's media server and
   EXECs the application that connects the call's audio to it (:func:`dialplan.media_application`),
   which returns only when the media connection ends;
3. the media server hands over each connection whose id it has read (after checking the peer
   against ``[live] allow``); :meth:`LiveCalls.accept` lets it in only if its id was announced and
   not claimed yet, and starts the conversation on a thread of its own. An id nobody announced,
   one already in use or one announced to another call is refused: a local process that is not
   the PBX cannot get into a call, nor feed one audio;
4. when the application returns, the route waits for the conversation to end, stores the call's
   end, and tells the dialplan (``VA_LIVE_END``, ``VA_LIVE_TURNS``).

Each ``serve`` worker process has its own media server (``port + worker``), so the media
connection always reaches the process holding its control session.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..audio.prompts import PromptSounds
from ..call.assistant import Assistant
from ..call.channel import CallLog
from ..call.ending import announce_end
from ..call.media import MediaLeg
from ..call.engine_conversation import EngineConversation, engine_for
from ..call.realtime import EndReason, LiveConversation, LiveOutcome
from ..errors import AGIError, ConfigError, RequestError
from ..logs import logger
from ..system.shipped import shipped_path
from ..types import CallInfo
from .access import parse_allow
from .agi import AGISession
from .dialplan import give_media_id, is_wideband, media_application, parse_live, tell_live_end, websocket_connection

# The interpreter's thread switch interval in a process that serves real-time media (seconds).
MEDIA_SWITCH_INTERVAL = 0.001
# After the media application returns, how long the conversation may take to store its last turn.
CONVERSATION_WIND_DOWN = 15.0


class MediaServer(Protocol):
    port: int

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


@dataclass
class _LiveCall:
    call: CallInfo
    announced_at: float
    data_dir: str = ""               # Asterisk's ASTDATADIR, where the admin's prompts are
    sample_rate: int = 8000          # the rate the route asked Asterisk for
    turns_before: int = 0            # exchanges the call had before this conversation
    language: str = ""               # the channel's language, checked ("": the config's)
    claimed: bool = False
    thread: threading.Thread | None = None
    outcome: LiveOutcome | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LiveCalls:
    """This process's media server and the real-time calls it serves."""

    def __init__(self, assistant: Assistant, worker: int = 0) -> None:
        self.assistant = assistant
        self.settings = assistant.config.live
        self.worker = worker
        self.allowed = parse_allow(", ".join(self.settings.allow))
        self._calls: dict[str, _LiveCall] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.settings.max_calls)
        self._prompts: dict[tuple[str, str], PromptSounds] = {}
        self.server: MediaServer | None = None
        # [live] engine, made once per language (its SDK client serves every call); None: the cascade.
        self.engine = engine_for(assistant)
        self._engines: dict[str, Any] = {assistant.config.general.language: self.engine}

    # -- the media server ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self.server is not None:
            return self.server.port
        settings = self.settings
        return (settings.audiosocket_port if settings.transport == "audiosocket" else settings.websocket_port) + self.worker

    def start(self, port: int | None = None) -> None:
        """Start the media server of ``[live] transport`` (``port``: another than the setting's,
        0 for any free one)."""
        settings = self.settings
        port = self.port if port is None else port
        # Each send on a media socket hands the interpreter to another thread; with Python's
        # default 5 ms switch interval the clock may wait that long to get it back, once per call
        # per tick, and with dozens of calls the last frames of a tick go out late.
        sys.setswitchinterval(min(sys.getswitchinterval(), MEDIA_SWITCH_INTERVAL))
        max_connections = settings.max_calls + 8  # room for a refused stranger while the calls go on
        server: Any
        if settings.transport == "audiosocket":
            from .audiosocket import AudioSocketServer

            server = AudioSocketServer(settings.host, port, allow=self.allowed, accept=self.accept,
                                       max_connections=max_connections, uuid_timeout=settings.connect_timeout)
        else:
            from .websocket_media import WebSocketMediaServer

            server = WebSocketMediaServer(settings.host, port, allow=self.allowed, accept=self.accept,
                                          max_connections=max_connections, password=settings.websocket_password)
        server.start()
        self.server = server
        logger.info("[LIVE] %s media server listening on %s:%d", settings.transport, settings.host, server.port)

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    # -- the calls ------------------------------------------------------------------------------------
    def try_begin(self) -> bool:
        return self._slots.acquire(blocking=False)

    def end(self) -> None:
        self._slots.release()

    def announce(self, call: CallInfo, data_dir: str = "", sample_rate: int = 8000, turns_before: int = 0,
                 language: str = "") -> str:
        """A new id for ``call``'s media connection (32 hex digits)."""
        call_id = uuid.uuid4().hex
        with self._lock:
            self._calls[call_id] = _LiveCall(call, time.monotonic(), data_dir, sample_rate, turns_before, language)
        return call_id

    def engine_in(self, assistant: Assistant) -> Any:
        """The conversation engine of ``assistant``'s language (made on first use)."""
        language = assistant.config.general.language
        with self._lock:
            if language not in self._engines:
                self._engines[language] = engine_for(assistant)
            return self._engines[language]

    def withdraw(self, call_id: str) -> _LiveCall | None:
        with self._lock:
            return self._calls.pop(call_id, None)

    def accept(self, leg: MediaLeg) -> bool:
        """The media server's acceptor: start the conversation of an announced, unclaimed id."""
        try:
            call_id = uuid.UUID(leg.call_id).hex
        except (ValueError, TypeError, AttributeError):
            logger.warning("[LIVE] media connection refused: %r is not a call id", str(leg.call_id)[:60])
            return False
        with self._lock:
            live = self._calls.get(call_id)
            if live is None or live.claimed:
                why = "already connected" if live is not None else "not announced by any call"
                logger.warning("[LIVE] media connection refused: call id %s... %s", call_id[:8], why)
                return False
            if time.monotonic() - live.announced_at > self.settings.connect_timeout + 5:
                logger.warning("[LIVE] media connection refused: call id %s... came too late", call_id[:8])
                return False
            live.claimed = True
        if getattr(leg, "rate_from_control", False):
            # AudioSocket says its rate only with the first audio frame: the one the route asked for.
            leg.sample_rate = live.sample_rate
        conversation: LiveConversation | EngineConversation
        assistant = self.assistant.in_language(live.language)
        engine = self.engine_in(assistant)
        if engine is not None:
            conversation = EngineConversation(leg, assistant, live.call, self.prompts_for(live), engine,
                                              turns_before=live.turns_before)
        else:
            conversation = LiveConversation(leg, assistant, live.call, self.prompts_for(live),
                                            turns_before=live.turns_before)
        thread = threading.Thread(target=self._converse, args=(conversation, live), daemon=True,
                                  name=f"voiceassist-live-{live.call.uniqueid}")
        live.thread = thread
        thread.start()
        return True

    def _converse(self, conversation: LiveConversation | EngineConversation, live: _LiveCall) -> None:
        try:
            live.outcome = conversation.run()
        finally:
            live.done.set()

    def prompts_for(self, live: _LiveCall) -> PromptSounds:
        """The call's prompts, looked up as Playback does: in the channel's language (de_DE, then
        de), then English; the admin's copies in Asterisk's sounds directory before ours."""
        key = (live.data_dir, live.language)
        with self._lock:
            if key not in self._prompts:
                prompts = self.assistant.config.general.prompts.strip("/")
                languages = list(dict.fromkeys(filter(None, (live.language, live.language.split("_")[0]))))
                directories = []
                if live.data_dir.startswith("/"):
                    sounds = Path(live.data_dir) / "sounds"
                    directories += [sounds / language / prompts for language in languages] + [sounds / prompts]
                if shipped := shipped_path("sounds"):
                    directories += [shipped / language for language in languages] + [shipped]
                self._prompts[key] = PromptSounds(directories)
            return self._prompts[key]


def serve_live(session: AGISession, assistant: Assistant, live: LiveCalls | None) -> None:
    """The ``voiceassist-live`` route (see the module's docstring)."""
    try:
        request = parse_live(session.env, session.arguments())
    except RequestError as exc:
        logger.warning("[LIVE] request refused (uniqueid %r): %s", session.env.get("agi_uniqueid", "")[:80], exc.reason)
        tell_live_end(session, "error", 0)
        return
    call = request.call.call_info()
    if live is None or live.server is None:
        logger.error("[LIVE] %s real-time calls are not served by this process ([live] transport)", call.uniqueid)
        tell_live_end(session, "error", 0)
        return
    if not live.try_begin():
        logger.warning("[LIVE] %s busy: %d real-time calls in progress", call.uniqueid, live.settings.max_calls)
        tell_live_end(session, "busy", 0)
        return
    try:
        _converse(session, assistant, live, call, request.turns_before, request.call.language)
    finally:
        live.end()


def _converse(session: AGISession, assistant: Assistant, live: LiveCalls, call: CallInfo, turns_before: int,
              language: str = "") -> None:
    settings = live.settings
    # The conversation engines speak 8 kHz μ-law: a wideband leg would only be resampled for them.
    wideband = settings.wideband and live.engine is None and is_wideband(session.variable("CHANNEL(audionativeformat)") or "")
    # Prompts from Asterisk's own sounds directory (when it is on this machine), else ours.
    call_id = live.announce(call, session.variable("ASTDATADIR") or "", 16000 if wideband else 8000, turns_before,
                            language)
    try:
        if settings.transport == "websocket":
            give_media_id(session, call_id)
        connection = websocket_connection(settings.websocket_client, live.worker)
        application, argument = media_application(settings.transport, call_id, settings.host, live.port,
                                                   wideband=wideband, websocket_client=connection)
        logger.info("[LIVE] %s %s media at %d Hz", call.uniqueid, settings.transport, 16000 if wideband else 8000)
        try:
            session.execute("EXEC", application, _quoted(argument))
        except AGIError as exc:
            logger.info("[LIVE] %s control session ended during the call: %s", call.uniqueid, exc)
    finally:
        entry = live.withdraw(call_id)
    outcome = None
    if entry is not None and entry.claimed:
        if not entry.done.wait(CONVERSATION_WIND_DOWN):
            logger.error("[LIVE] %s the conversation did not end with its media connection", call.uniqueid)
        outcome = entry.outcome
    if outcome is None:
        logger.error("[LIVE] %s the media connection never arrived (is `serve` reachable from Asterisk at "
                     "%s:%d, and %s loaded?)", call.uniqueid, settings.host, live.port,
                     "app_audiosocket/chan_audiosocket" if settings.transport == "audiosocket" else "chan_websocket")
        tell_live_end(session, "error", 0)
        _store_end(assistant, call, "error")
        return
    reason = outcome.reason.value
    if outcome.reason is EndReason.HANGUP and not _caller_gone(session):
        # The media connection went, the caller did not (Asterisk dropped it, or our side did):
        # the dialplan apologises instead of leaving them in silence.
        logger.warning("[LIVE] %s the media connection was lost; the caller is still there", call.uniqueid)
        reason = "dropped"
    _store_end(assistant, call, reason)
    tell_live_end(session, reason, outcome.turns, outcome.transcript, outcome.reply, assistant.config, outcome.action)
    if outcome.action is None:  # else the dialplan's action goes on, and its h extension ends the call
        # On a thread of its own: the summary may take seconds, and the dialplan waits for this route.
        threading.Thread(target=announce_end, args=(assistant, call, f"live-{reason}", outcome.turns, None,
                                                    CallLog(None, call.uniqueid)),
                         daemon=True, name=f"voiceassist-end-{call.uniqueid}").start()


def _caller_gone(session: AGISession) -> bool:
    """Whether the caller's channel is gone (asked of Asterisk: its HANGUP line may still be on
    the way when the media application returns)."""
    try:
        return session.poll_hangup() or session.execute("CHANNEL STATUS").result != "6"  # 6: up
    except AGIError:  # 511 on a dead channel, or the connection closed
        return True


def _quoted(argument: str) -> str:
    if '"' in argument or "\n" in argument:
        raise ConfigError(f"refusing to send {argument!r} to Asterisk")
    return f'"{argument}"'


def _store_end(assistant: Assistant, call: CallInfo, end_state: str) -> None:
    try:
        assistant.journal().end_call(call, f"live-{end_state}")
    except Exception as exc:  # StorageError or a driver error: logged, the caller is gone anyway
        logger.error("[DB] %s call end NOT stored: %s", call.uniqueid, exc)
