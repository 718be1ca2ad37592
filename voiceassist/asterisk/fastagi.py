"""The FastAGI server: ``voiceassist serve``.

A synchronous ``socketserver.ThreadingTCPServer`` (one thread per AGI session). Asterisk connects
for ``AGI(agi://127.0.0.1:4573/voiceassist,...)``; the script part of the URL picks the route.
Providers are created once and shared by all calls. Beyond ``max_calls`` concurrent sessions a
caller hears the busy prompt and the call continues in the dialplan. SIGTERM stops accepting and
lets calls in flight finish.

Only the PBX may talk to it (:mod:`voiceassist.asterisk.access`): a peer outside ``[fastagi] allow`` is
closed before a byte is read; with ``[fastagi] secret`` set, a session whose URL lacks it is
refused once its environment block is in. A refusal sends Asterisk's own ``FAILURE`` line and
nothing else: Asterisk ends the AGI with AGISTATUS=FAILURE, so the dialplan plays the apology,
and the peer learns nothing.

Slow or many clients cannot hold the server: the environment block must be complete within
:data:`ENVIRONMENT_TIMEOUT` (a watchdog in the accept loop shuts down connections past it, so
trickled bytes cannot stretch it; SIGTERM shuts down those still sending it), and connections
are capped (within the open-file limit) before a handler thread starts: past the cap they are
refused, and connections still sending their block after a second make room for new ones.
"""

from __future__ import annotations

import errno
import gc
import os
import resource
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from typing import Any

from ..call.assistant import Assistant
from ..errors import AGIEnvironmentRefused, AGIError, ConfigError
from ..logs import logger
from ..storage.journal import SpoolFlusher
from ..storage.retention import DailyPrune
from .access import RefusalLog, check_exposure, is_allowed, parse_allow, route_of, secret_matches
from .agi import AGISession, Stream
from .dialplan import LIVE_ROUTE, send_prompt
from .live import LiveCalls, serve_live
from .routes import CHECKS, ROUTES, Route
from .workers import supervise

# Seconds a client may take to send its whole environment block (Asterisk writes it at once).
ENVIRONMENT_TIMEOUT = 10.0
# A connection still sending its block after this long is not Asterisk: when the server is full
# it is shut down to make room for a new connection.
STALE_ENVIRONMENT = 1.0
# After refusing, seconds to wait for the peer to close (Asterisk does at once, after HANGUP):
# closing with its bytes unread would reset the connection and could lose the FAILURE line.
REFUSAL_DRAIN = 1.0
# Asterisk opens connections in bursts (many calls ending a question at once).
LISTEN_BACKLOG = 256
# Open files kept free for everything but connections (database, spool, log, provider sockets) ...
RESERVED_FDS = 64
# ... and budgeted per connection (its socket, the recording, an answer file, a converter's pipes).
FDS_PER_CONNECTION = 4



def connection_cap(max_calls: int) -> int:
    """Concurrent connections (calls, busy prompts, blocks still arriving): twice the calls plus
    a margin, but never more than the open-file limit leaves room for (so a flood gets refusals,
    not EMFILE in accept(), the database or the spool)."""
    wanted = 2 * max_calls + 16
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    return max(1, min(wanted, (soft - in_use - RESERVED_FDS) // FDS_PER_CONNECTION))


class FastAGIServer(socketserver.ThreadingTCPServer):
    """Serves AGI sessions for one :class:`Assistant`."""

    allow_reuse_address = True
    daemon_threads = False      # server_close() waits for calls in flight
    block_on_close = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], assistant: Assistant, *, max_calls: int,
                 read_timeout: float, max_connections: int | None = None) -> None:
        section = assistant.config.section("fastagi")
        self.assistant = assistant
        self.read_timeout = read_timeout
        self.max_calls = max_calls
        self.environment_timeout = ENVIRONMENT_TIMEOUT
        self.allowed = parse_allow(section.get("allow"))
        self.secret = section.get("secret", "")
        self.refusals = RefusalLog()
        self.max_connections = max_connections or connection_cap(max_calls)
        self._slots = threading.BoundedSemaphore(max_calls)
        self._active = 0
        self._active_lock = threading.Lock()
        # Connections with a handler thread; those still sending their block (since when); those
        # shut down to make room whose threads have not ended yet.
        self._connections = 0
        self._receiving: dict[socket.socket, float] = {}
        self._evicted: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._heap_settled_after_a_call = False
        # Real-time calls: this process's media server (started by serve()).
        self.live: LiveCalls | None = None
        self.routes: dict[str, Route] = {
            **ROUTES, LIVE_ROUTE: lambda session, assistant: serve_live(session, assistant, self.live)}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, FastAGIHandler)

    @property
    def active_calls(self) -> int:
        return self._active

    @property
    def open_connections(self) -> int:
        return self._connections

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

    # -- before a handler thread: who, and how many -----------------------------------------------
    def get_request(self) -> tuple[Any, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of files despite the cap (another part of the process took them): pause the
                # accept loop briefly instead of spinning on a connection we cannot take.
                self.refusals("accept()", f"cannot accept a connection: {exc.strerror}")
                time.sleep(0.05)
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        peer = str(client_address[0])
        if not is_allowed(peer, self.allowed):
            self.refusals(peer, "not in [fastagi] allow (closed before reading anything)")
            return False
        with self._connections_lock:
            room = self._connections - len(self._evicted) < self.max_connections or self._evict_stale()
        if not room:
            self.refusals(peer, f"{self.max_connections} connections already open")
            _send_failure_now(request)
            return False
        return True

    def _evict_stale(self) -> bool:
        """(Lock held.) Shut down the connection that has been sending its block the longest, if
        that is over :data:`STALE_ENVIRONMENT`; at most a quarter of the cap waits to close."""
        if len(self._evicted) > self.max_connections // 4:
            return False
        now = time.monotonic()
        stale = [(since, sock) for sock, since in self._receiving.items() if now - since > STALE_ENVIRONMENT]
        if not stale:
            return False
        _, oldest = min(stale, key=lambda item: item[0])
        del self._receiving[oldest]
        self._evicted.add(oldest)
        _shut(oldest)
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections += 1
            self._receiving[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_done(request)
            if not self._heap_settled_after_a_call:
                # The first call imported what start-up did not (the streaming parts of the SDKs,
                # storage's compiled statements): out of the collector's sight too, once.
                self._heap_settled_after_a_call = True
                _settle_heap()

    def _connection_done(self, request: Any) -> None:
        with self._connections_lock:
            self._connections -= 1
            self._receiving.pop(request, None)
            self._evicted.discard(request)

    def environment_received(self, request: Any) -> None:
        """The connection's block is in (or refused): the watchdog leaves it alone from now on."""
        with self._connections_lock:
            self._receiving.pop(request, None)

    def service_actions(self) -> None:
        """The watchdog, run by serve_forever() between accepts: a connection still sending its
        block past the deadline is shut down (its thread's read then ends at once)."""
        now = time.monotonic()
        with self._connections_lock:
            late = [sock for sock, since in self._receiving.items() if now - since > self.environment_timeout]
            for sock in late:
                del self._receiving[sock]
        for sock in late:
            _shut(sock)

    def server_close(self) -> None:
        """Close the listener and wait for calls in flight; connections still sending their
        block are shut down first, so they do not hold the shutdown for their deadline."""
        with self._connections_lock:
            receiving = list(self._receiving)
            self._receiving.clear()
        for sock in receiving:
            _shut(sock)
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("[AGI] error serving %s", client_address[0] if client_address else "?")


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _send_failure_now(sock: socket.socket) -> None:
    """From the accept loop, which must not wait: Asterisk's FAILURE line if it fits at once."""
    try:
        sock.setblocking(False)
        sock.send(b"FAILURE\n")
    except OSError:
        pass


def refuse(sock: socket.socket) -> None:
    """End a session before any work: Asterisk's ``FAILURE`` line (AGISTATUS=FAILURE, so the
    dialplan plays the apology) and nothing the peer could learn from; then wait briefly for the
    peer to close, reading what it still sends."""
    deadline = time.monotonic() + REFUSAL_DRAIN
    try:
        sock.settimeout(REFUSAL_DRAIN)
        sock.sendall(b"FAILURE\n")
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(4096):
                break
    except OSError:
        pass


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
            session = self._authenticated_session(sock, reader, writer)
            if session is not None:
                self._serve_session(sock, session)
        finally:
            reader.close()
            writer.close()

    def _authenticated_session(self, sock: socket.socket, reader: Stream, writer: Stream) -> AGISession | None:
        """The session once its environment block is in and, with a secret configured, its URL
        carries the secret; None (after :func:`refuse`) otherwise."""
        peer = str(self.client_address[0])
        try:
            session = AGISession(reader, writer, environment_seconds=self.server.environment_timeout)
        except AGIEnvironmentRefused as exc:
            # A whole block from (probably) a real Asterisk, e.g. a forged block in a caller ID:
            # FAILURE, so the caller hears the apology.
            self.server.environment_received(sock)
            self.server.refusals(peer, f"AGI environment refused: {exc}")
            refuse(sock)
            return None
        except AGIError as exc:
            # Silent, trickling, endless or garbage: not Asterisk; just closed.
            self.server.environment_received(sock)
            self.server.refusals(peer, f"no usable AGI environment: {exc}")
            return None
        self.server.environment_received(sock)
        if self.server.secret and not secret_matches(session.env.get("agi_network_script", ""), self.server.secret):
            self.server.refusals(peer, "wrong or missing secret in the AGI URL (agi://...?secret=)")
            refuse(sock)
            return None
        return session

    def _serve_session(self, sock: socket.socket, session: AGISession) -> None:
        sock.settimeout(self.server.read_timeout)
        script = route_of(session.env.get("agi_network_script", ""))
        uniqueid = session.env.get("agi_uniqueid", "?")
        route = self.server.routes.get(script)
        prompts = self.server.assistant.config.general.prompts.rstrip("/")
        try:
            if route is None:
                logger.error("[AGI] %s no FastAGI route %r; known: %s", uniqueid, script, ", ".join(ROUTES))
                send_prompt(session, f"{prompts}/cant-answer", "error")
                return
            if script in CHECKS:
                route(session, self.server.assistant)
                return
            if not self.server.try_begin_call():
                logger.warning("[AGI] %s busy: %d calls in progress", uniqueid, self.server.max_calls)
                send_prompt(session, f"{prompts}/busy", "busy")
                return
            try:
                route(session, self.server.assistant)
            finally:
                self.server.end_call()
        except AGIError as exc:
            logger.info("[AGI] %s session ended: %s", uniqueid, exc)
        except Exception:
            logger.exception("[AGI] %s unexpected error", uniqueid)


def start_live(assistant: Assistant, worker: int, announce: bool) -> LiveCalls | None:
    """This process's real-time media server ([live]); None (logged) when it cannot listen:
    the AGI flow goes on, real-time callers hear the apology."""
    live = LiveCalls(assistant, worker)
    try:
        live.start()
    except (OSError, ConfigError, ImportError) as exc:
        _warn(f"real-time calls unavailable: the {live.settings.transport} media server cannot listen on "
              f"{live.settings.host}:{live.port}: {exc}")
        return None
    if announce:
        print(f"voiceassist: real-time media ({live.settings.transport}) on {live.settings.host}:{live.port}", flush=True)
    return live


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
    # Beyond loopback only when allow lists the PBX or a secret is set (ConfigError: exit 2).
    check_exposure(address[0], parse_allow(section.get("allow")), section.get("secret", ""))
    workers = max(1, workers or section.get_int("workers"))
    total_calls = max_calls or section.get_int("max_calls")
    server = FastAGIServer(address, assistant, max_calls=-(-total_calls // workers),
                           read_timeout=section.get_float("read_timeout"))
    if server.max_connections < server.max_calls:
        _warn(f"the open-file limit ({resource.getrlimit(resource.RLIMIT_NOFILE)[0]}) leaves room for "
              f"{server.max_connections} connections, fewer than max_calls ({server.max_calls}): raise "
              "LimitNOFILE in the systemd unit or lower [fastagi] max_calls")
    # SIGTERM during start-up (SDK imports take a second) must drain, not kill: held from here
    # until the handlers are in place (in the supervisor and in each worker).
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if workers > 1:
        # Several processes wait on one socket: a worker that loses the race for a connection must
        # not block in accept() (it would miss its shutdown); the accepted sockets stay blocking.
        server.socket.setblocking(False)
        bound = server.server_address
        print(f"voiceassist: FastAGI listening on {bound[0]!s}:{bound[1]} ({workers} worker processes)", flush=True)
        worker = supervise(workers)
        if worker is None:
            return  # the supervisor: its workers have stopped
    else:
        worker = 0
    _serve_in_this_process(server, assistant, ready, announce=workers == 1, worker=worker)


def _settle_heap() -> None:
    """Move everything start-up made (modules, SDK clients, their tables) out of the garbage
    collector's sight: a full collection walks every object there is while it holds the
    interpreter lock, and with the SDKs loaded that took 100-330 ms in a server with dozens of
    real-time calls (each one a gap in the callers' audio being taken in). What calls create
    later is collected as before."""
    gc.collect()
    gc.freeze()


def _serve_in_this_process(server: FastAGIServer, assistant: Assistant,
                           ready: Callable[[FastAGIServer], None] | None, announce: bool, worker: int = 0) -> None:
    # Create the SDK clients once, before the first call; report problems now.
    for problem in assistant.prepare():
        _warn(problem)
    server.live = start_live(assistant, worker, announce)
    _settle_heap()

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
    # Webhook events (ours and process-AGI calls') are posted as they come ([webhooks] urls).
    sender = None
    outbox = assistant.outbox() if assistant.config.webhooks.urls else None
    if outbox is not None:
        from ..events.webhooks import WebhookSender

        sender = WebhookSender(assistant.config.webhooks, outbox)
        sender.start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    bound = server.server_address
    logger.info("[AGI] FastAGI listening on %s:%s (pid %d)", bound[0], bound[1], os.getpid())
    if announce:
        print(f"voiceassist: FastAGI listening on {bound[0]!s}:{bound[1]}", flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()  # joins the call threads (block_on_close)
        if server.live is not None:
            server.live.shutdown()
        if flusher is not None:
            flusher.stop()
        if sender is not None:
            sender.stop()
        pruner.stop()
        logger.info("[AGI] FastAGI stopped (pid %d)", os.getpid())
        if announce:
            print("voiceassist: FastAGI stopped", flush=True)
