"""The web console's pages (Flask): log in, calls, one call with its audio, live calls, statistics,
and ``/metrics``.

Everything shown comes from calls, so everything is escaped (Jinja's autoescaping; the live page's
script builds text nodes, never HTML), no page has an inline script, and the Content-Security-Policy
says so to the browser. Every state change is a POST with the session's CSRF token.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...asterisk.access import is_allowed, parse_allow
from ...audio.recording import wav_bytes
from ...config import Config
from ...errors import StorageError, VoiceAssistError
from ...events.live import UNIQUEID
from ...logs import logger
from ...storage.retention import inside, remove_files
from ...storage.schema import TURN_STATUSES
from .accounts import Accounts, LoginThrottle, Session, Sessions
from .live import LiveCalls
from .metrics import ConsoleMetrics
from .statistics import STAGES_READ, statistics_page
from .transcripts import CallTranscriber

SESSION_COOKIE = "va_session"
LOGIN_COOKIE = "va_login"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
KEEPALIVE_SECONDS = 15.0
MAX_AUDIO_BYTES = 64 * 1024 * 1024


@dataclass
class Console:
    """What the pages share: the settings, the database, the accounts and the live calls."""

    config: Config
    store: Callable[[], Any]
    accounts: Accounts
    sessions: Sessions
    throttle: LoginThrottle
    live: LiveCalls
    metrics: ConsoleMetrics
    transcriber: CallTranscriber | None = None  # [web] transcribe_calls


def create_app(console: Console) -> Flask:
    app = Flask(__name__, static_folder="static", template_folder="templates")
    settings = console.config.web
    allowed, metrics_allowed = parse_allow(", ".join(settings.allow)), parse_allow(", ".join(settings.metrics_allow))
    page_size = settings.page_size
    if settings.behind_proxy:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The proxy's scheme, host and path prefix are believed; never its client address, so
        # the allow lists keep judging the connection itself.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=1, x_host=1, x_prefix=1)  # type: ignore[method-assign]
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)

    @app.before_request
    def who_is_asking() -> Any:
        if request.path == "/metrics":
            if not is_allowed(request.remote_addr or "", metrics_allowed) or "X-Forwarded-For" in request.headers:
                abort(403)
            return None
        if not is_allowed(request.remote_addr or "", allowed):
            abort(403)
        g.session = console.sessions.get(request.cookies.get(SESSION_COOKIE), console.accounts)
        if request.method not in ("GET", "HEAD"):
            if request.endpoint != "login" and not _csrf_ok(g.session):
                logger.warning("[WEB] %s %s refused: no valid CSRF token", request.method, request.path)
                abort(403, "This form has expired. Go back, reload the page and try again.")
            if not _same_origin():
                abort(403, "Refused: the request came from another site.")
        if request.endpoint not in ("login", "static") and g.session is None:
            return redirect(url_for("login", next=request.full_path if request.query_string else request.path))
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" would make a form's Origin "null"
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.context_processor
    def common() -> dict[str, Any]:
        session = getattr(g, "session", None)
        return {"session": session, "csrf": session.csrf if session else ""}

    # -- logging in ---------------------------------------------------------------------------------
    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        next_page = _local_path(request.values.get("next", ""))
        if request.method == "GET":
            # The browser's own token if it has one: a second login page (another tab, or the
            # favicon request sent here) must not invalidate the form already shown.
            token = request.cookies.get(LOGIN_COOKIE, "")
            if not (20 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
                token = secrets.token_urlsafe(24)
            response = Response(render_template("login.html", login_token=token, next=next_page, error=""))
            _set_cookie(response, LOGIN_COOKIE, token, max_age=3600)
            return response
        form_token, cookie_token = request.form.get("login_token", ""), request.cookies.get(LOGIN_COOKIE, "")
        if not form_token or not secrets.compare_digest(form_token, cookie_token):
            abort(403, "This form has expired. Reload the page and try again.")
        name = request.form.get("name", "")[:64]
        keys = (f"address:{request.remote_addr}", f"account:{name}")
        wait = console.throttle.wait_seconds(*keys)
        if wait:
            logger.warning("[WEB] login for %r from %s refused: too many failures", name, request.remote_addr)
            return render_template("login.html", login_token=form_token, next=next_page,
                                   error=f"Too many failed attempts. Try again in {wait} seconds."), 429
        account = console.accounts.verify(name, request.form.get("password", "")[:1024])
        if account is None:
            console.throttle.failed(*keys)
            logger.warning("[WEB] failed login for %r from %s", name, request.remote_addr)
            return render_template("login.html", login_token=form_token, next=next_page,
                                   error="Wrong name or password."), 401
        console.throttle.succeeded(*keys)
        token, _session = console.sessions.start(account)
        logger.info("[WEB] %s (%s) logged in from %s", account.name, account.role, request.remote_addr)
        redirected: Any = redirect(next_page or url_for("calls"))
        _set_cookie(redirected, SESSION_COOKIE, token, max_age=int(console.sessions.seconds))
        redirected.delete_cookie(LOGIN_COOKIE, path=_cookie_path())
        return redirected

    @app.post("/logout")
    def logout() -> Any:
        console.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = redirect(url_for("login"))
        response.delete_cookie(SESSION_COOKIE, path=_cookie_path())
        return response

    @app.get("/")
    def home() -> Any:
        return redirect(url_for("calls"))

    # -- calls --------------------------------------------------------------------------------------
    @app.get("/calls")
    def calls() -> Any:
        filters = _call_filters()
        page = _int(request.args.get("page"), 1, 1, 100000)
        try:
            rows, more = console.store().call_page(offset=(page - 1) * page_size, limit=page_size, **filters["query"])
        except StorageError as exc:
            return render_template("calls.html", rows=[], more=False, page=page, filters=filters["form"],
                                   error=str(exc), statuses=TURN_STATUSES, link=_link), 503
        return render_template("calls.html", rows=rows, more=more, page=page, filters=filters["form"], error="",
                               statuses=TURN_STATUSES, link=_link)

    @app.get("/calls/<uniqueid>")
    def call(uniqueid: str) -> Any:
        _check_uniqueid(uniqueid)
        row, turns = console.store().call_rows(uniqueid)
        if row is None:
            abort(404, "No such call.")
        return render_template("call.html", call=row, turns=turns)

    @app.post("/calls/<uniqueid>/delete")
    def delete_call(uniqueid: str) -> Any:
        _check_uniqueid(uniqueid)
        session = _admin()
        paths = console.store().delete_call(uniqueid)
        if paths is None:
            abort(404, "No such call.")
        removed = remove_files(paths, console.config.general.answer_dir)
        logger.info("[WEB] %s deleted call %s and %d audio files", session.account, uniqueid, removed)
        return redirect(url_for("calls"))

    @app.get("/audio/<uniqueid>/<int:turn_number>/<kind>")
    def audio(uniqueid: str, turn_number: int, kind: str) -> Any:
        _check_uniqueid(uniqueid)
        _admin()
        if kind not in ("question", "answer"):
            abort(404)
        row, turns = console.store().call_rows(uniqueid)
        turn = next((t for t in turns if t["turn_number"] == turn_number), None)
        path = turn and turn["recording_path" if kind == "question" else "answer_path"]
        if not path:
            abort(404, "This turn has no such audio.")
        wav = _browser_audio(path, console.config.general.answer_dir)
        if wav is None:
            abort(404, "The audio file is gone (deleted by retention, or never kept).")
        return Response(wav, mimetype="audio/wav", headers={"Cache-Control": "private, no-store"})

    # -- live ---------------------------------------------------------------------------------------
    @app.get("/live")
    def live() -> Any:
        session: Session = g.session
        pbx_calls, problem = [], ""
        if console.transcriber is not None and session.admin:
            try:
                pbx_calls = console.transcriber.calls()
            except VoiceAssistError as exc:
                problem = str(exc)
        return render_template("live.html", transcribing=console.transcriber is not None and session.admin,
                               pbx_calls=pbx_calls, problem=problem, notice=request.args.get("notice", "")[:200])

    @app.post("/live/transcribe")
    def transcribe() -> Any:
        session = _admin()
        if console.transcriber is None:
            abort(404)
        try:
            call = console.transcriber.start(request.form.get("channel", "")[:200], session.account)
        except VoiceAssistError as exc:
            return redirect(url_for("live", notice=f"Not transcribed: {exc}"))
        return redirect(url_for("live", notice=f"Transcribing {call.channel} and {call.peer}."))

    @app.get("/live/events")
    def live_events() -> Any:
        watcher = console.live.watch()
        if watcher is None:
            return Response("retry: 10000\n\n", status=503, mimetype="text/event-stream")

        def stream() -> Iterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        message = watcher.get(timeout=KEEPALIVE_SECONDS)
                    except queue.Empty:
                        yield ": keep-alive\n\n"
                        continue
                    if message is None:
                        return
                    yield message
            finally:
                console.live.unwatch(watcher)

        return Response(stream(), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # -- statistics ---------------------------------------------------------------------------------
    @app.get("/stats")
    def stats() -> Any:
        days = _int(request.args.get("days"), 7, 1, 90)
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
        try:
            columns = console.store().timing_columns(since, STAGES_READ)
        except StorageError as exc:
            return render_template("stats.html", days=days, page=None, error=str(exc)), 503
        return render_template("stats.html", days=days, error="",
                               page=statistics_page(columns, since, days, console.metrics))

    @app.get("/metrics")
    def metrics() -> Any:
        return Response(generate_latest(console.metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(413)
    def refused(error: Any) -> Any:
        return render_template("error.html", code=error.code, message=error.description), error.code

    @app.errorhandler(StorageError)
    def database_down(error: StorageError) -> Any:
        return render_template("error.html", code=503, message=f"The database cannot be read: {error}"), 503

    def _admin() -> Session:
        session: Session | None = g.session
        if session is None or not session.admin:
            abort(403, "Only an admin account may do this.")
        return session

    def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=_cookie_path(), httponly=True, samesite="Strict",
                            secure=request.is_secure)

    return app


def _cookie_path() -> str:
    return (request.script_root or "") + "/"


def _csrf_ok(session: Session | None) -> bool:
    token = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    return session is not None and bool(token) and secrets.compare_digest(token, session.csrf)


def _same_origin() -> bool:
    """A browser names the page a POST came from: it must be this console (no other site's form)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.rstrip("/") == request.host_url.rstrip("/")


def _local_path(value: str) -> str:
    """``value`` if it is a path on this site (never another site: no open redirect), else ""."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and "\n" not in value:
        return value
    return ""


def _check_uniqueid(uniqueid: str) -> None:
    if not UNIQUEID.fullmatch(uniqueid):  # the live feed's rule for a call's id
        abort(404, "No such call.")


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value or default)))
    except ValueError:
        return default


def _date(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def _call_filters() -> dict[str, dict[str, Any]]:
    args = request.args
    form = {name: args.get(name, "")[:100] for name in ("since", "until", "caller", "status", "provider", "q")}
    since, until = _date(form["since"]), _date(form["until"])
    query = {"since": since, "until": until + dt.timedelta(days=1) if until else None, "caller": form["caller"],
             "status": form["status"] if form["status"] in TURN_STATUSES else "",
             "provider": form["provider"], "text": form["q"]}
    return {"form": form, "query": query}


def _link(page: int, filters: dict[str, str]) -> str:
    values = {k: v for k, v in filters.items() if v}
    values["page"] = str(page)
    return url_for("calls") + "?" + urlencode(values)


def _browser_audio(path: str, answer_dir: str) -> bytes | None:
    """The file as a WAV a browser plays: a WAV as it is, raw μ-law (an AGI answer) wrapped as 16-bit
    PCM. Only regular files inside the answer directory, never through a link."""
    if not inside(path, answer_dir):
        logger.warning("[WEB] audio %r refused: outside %s", path, answer_dir)
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_AUDIO_BYTES:
            return None
        data = file.read()
    suffix = Path(path).suffix
    if suffix == ".wav":
        return data
    if suffix in (".ulaw", ".ul"):
        from ...audio.conversion import ulaw_to_pcm

        return wav_bytes(ulaw_to_pcm(data, 8000, 8000), 8000)
    if suffix in (".sln", ".sln16"):
        return wav_bytes(data, 16000 if suffix == ".sln16" else 8000)
    return None
