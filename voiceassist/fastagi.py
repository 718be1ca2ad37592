"""The FastAGI server: ``voiceassist serve``.

A synchronous ``socketserver.ThreadingTCPServer`` (one thread per AGI session). Asterisk connects
for ``AGI(agi://127.0.0.1:4573/voiceassist,...)``; the script part of the URL picks the route.
Providers are created once and shared by all calls. Beyond ``max_calls`` concurrent sessions a
caller hears the busy prompt and the call continues in the dialplan. SIGTERM stops accepting and
lets calls in flight finish.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import IO

from .agi import AGISession
from .assistant import Assistant
from .errors import AGIError
from .flow import CallLog, handle_session
from .journal import SpoolFlusher
from .logs import logger
from .retention import DailyPrune

# Seconds a client may take to send its environment block (a silent client must not hold a thread).
ENVIRONMENT_TIMEOUT = 10.0

Route = Callable[[AGISession, Assistant], None]
ROUTES: dict[str, Route] = {"voiceassist": handle_session}


class FastAGIServer(socketserver.ThreadingTCPServer):
    """Serves AGI sessions for one :class:`Assistant`."""

    allow_reuse_address = True
    daemon_threads = False      # server_close() waits for calls in flight
    block_on_close = True

    def __init__(self, address: tuple[str, int], assistant: Assistant, *, max_calls: int,
                 read_timeout: float) -> None:
        self.assistant = assistant
        self.read_timeout = read_timeout
        self.max_calls = max_calls
        self.environment_timeout = ENVIRONMENT_TIMEOUT
        self._slots = threading.BoundedSemaphore(max_calls)
        self._active = 0
        self._active_lock = threading.Lock()
        super().__init__(address, FastAGIHandler)

    @property
    def active_calls(self) -> int:
        return self._active

    def try_begin_call(self) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        with self._active_lock:
            self._active += 1
        return True

    def end_call(self) -> None:
        with self._active_lock:
            self._active -= 1
        self._slots.release()


class FastAGIHandler(socketserver.BaseRequestHandler):
    server: FastAGIServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.server.environment_timeout)
        # Unbuffered: AGISession.poll_hangup() uses select(), which cannot see Python's buffer.
        reader = sock.makefile("rb", buffering=0)
        writer = sock.makefile("wb", buffering=0)
        try:
            self._serve_session(sock, reader, writer)
        finally:
            reader.close()
            writer.close()

    def _serve_session(self, sock: socket.socket, reader: IO[bytes], writer: IO[bytes]) -> None:
        try:
            # Asterisk writes the block at once; a client still sending after a few read timeouts is not Asterisk.
            session = AGISession(reader, writer, environment_seconds=3 * self.server.environment_timeout)
        except AGIError as exc:
            logger.warning("[AGI] %s: no usable AGI environment: %s", self.client_address[0], exc)
            return
        sock.settimeout(self.server.read_timeout)
        script = session.env.get("agi_network_script", "").split("?", 1)[0].strip("/")
        uniqueid = session.env.get("agi_uniqueid", "?")
        route = ROUTES.get(script)
        prompts = self.server.assistant.config.section("general").get("prompts").rstrip("/")
        try:
            if route is None:
                CallLog(session, uniqueid)("AGI", f"no FastAGI route {script!r}; known: {', '.join(ROUTES)}",
                                           logging.ERROR)
                self._send_away(session, f"{prompts}/cant-answer", "error")
                return
            if not self.server.try_begin_call():
                CallLog(session, uniqueid)("AGI", f"busy: {self.server.max_calls} calls in progress",
                                           logging.WARNING)
                self._send_away(session, f"{prompts}/busy", "busy")
                return
            try:
                route(session, self.server.assistant)
            finally:
                self.server.end_call()
        except AGIError as exc:
            logger.info("[AGI] %s session ended: %s", uniqueid, exc)
        except Exception:
            logger.exception("[AGI] %s unexpected error", uniqueid)

    @staticmethod
    def _send_away(session: AGISession, prompt: str, status: str) -> None:
        session.set_variable("VA_ANSWER", prompt)
        session.set_variable("VA_CONTINUE", "0")
        session.set_variable("VOICEASSIST_STATUS", status)


def _warn(message: str) -> None:
    logger.error("[AGI] %s", message)
    print(f"voiceassist serve: warning: {message}", flush=True)


def serve(assistant: Assistant, host: str | None = None, port: int | None = None,
          max_calls: int | None = None, ready: Callable[[FastAGIServer], None] | None = None,
          workers: int | None = None) -> None:
    """Run the server until SIGTERM/SIGINT, then wait for calls in flight to finish.

    ``workers`` > 1 (``[fastagi] workers``): that many processes share the listening socket, each
    with its own SDK clients and ``max_calls / workers`` calls. One Python process runs one thread
    at a time; streaming many answers at once (the SDKs parse every chunk) needs more than one
    core (see benchmarks/fastagi_load.py).
    """
    section = assistant.config.section("fastagi")
    address = (host or section.get("host"), port if port is not None else section.get_int("port"))
    workers = max(1, workers or section.get_int("workers"))
    total_calls = max_calls or section.get_int("max_calls")
    server = FastAGIServer(address, assistant, max_calls=-(-total_calls // workers),
                           read_timeout=section.get_float("read_timeout"))
    # SIGTERM during start-up (SDK imports take a second) must drain, not kill: held from here
    # until the handlers are in place (in the supervisor and in each worker).
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if workers > 1:
        # Several processes wait on one socket: a worker that loses the race for a connection must
        # not block in accept() (it would miss its shutdown); the accepted sockets stay blocking.
        server.socket.setblocking(False)
        bound = server.server_address
        print(f"voiceassist: FastAGI listening on {bound[0]}:{bound[1]} ({workers} worker processes)", flush=True)
        if _supervise(workers):
            return  # the supervisor: its workers have stopped
    _serve_in_this_process(server, assistant, ready, announce=workers == 1)


def _supervise(workers: int) -> bool:
    """Fork the workers; in the parent, wait for them (SIGTERM/SIGINT are passed on) and return
    True. In a worker, return False at once (it goes on to serve)."""
    children: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            return False
        children.add(pid)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:
            logger.error("[AGI] FastAGI worker %d ended (status %d); stopping the others", pid, status)
            stop(signal.SIGTERM, None)
    print("voiceassist: FastAGI stopped", flush=True)
    return True


def _serve_in_this_process(server: FastAGIServer, assistant: Assistant,
                           ready: Callable[[FastAGIServer], None] | None, announce: bool) -> None:
    # Create the SDK clients once, before the first call; report problems now.
    for problem in assistant.prepare():
        _warn(problem)

    def stop(signum: int, _frame: object) -> None:
        logger.info("[AGI] signal %d: draining %d calls", signum, server.active_calls)
        threading.Thread(target=server.shutdown, daemon=True).start()

    # Turns spooled while the database was away (by us or by process-AGI calls) go in when it is back.
    flusher = None
    interval = assistant.config.section("database").get_float("flush_interval")
    if interval > 0:
        flusher = SpoolFlusher(assistant.journal(), interval)
        flusher.start()
    # Recordings, answers and old calls are pruned once a day ([privacy] retention settings).
    privacy = assistant.config.settings("privacy")
    pruner = DailyPrune(assistant.journal(), assistant.config.settings("general").answer_dir,
                        privacy.retention_days, privacy.audio_retention_days)
    if privacy.retention_days > 0 or privacy.audio_retention_days > 0:
        pruner.start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    bound = server.server_address
    logger.info("[AGI] FastAGI listening on %s:%s (pid %d)", bound[0], bound[1], os.getpid())
    if announce:
        print(f"voiceassist: FastAGI listening on {bound[0]}:{bound[1]}", flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()  # joins the call threads (block_on_close)
        if flusher is not None:
            flusher.stop()
        pruner.stop()
        logger.info("[AGI] FastAGI stopped (pid %d)", os.getpid())
        if announce:
            print("voiceassist: FastAGI stopped", flush=True)
