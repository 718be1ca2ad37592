"""``voiceassist web``: the console served by waitress, with the live feed's listener, and the
accounts commands (``web adduser``, ``web deluser``, ``web users``)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from ...asterisk.access import is_loopback_host
from ...config import Config
from ...errors import ConfigError
from ...logs import logger
from ...system.privileges import SERVICE_USER
from ...system.safe_files import open_directory
from .accounts import Account, Accounts, LoginThrottle, Sessions, accounts_text, check_new_account, hash_password, read_accounts
from .app import Console, create_app
from .live import LiveCalls
from .metrics import ConsoleMetrics

THREADS = 24  # each browser on the live page holds one while it watches
SPOOL_SAMPLE_SECONDS = 60.0


def check_bind(config: Config) -> None:
    """A console beyond loopback must be behind a TLS proxy or explicitly allowed plain HTTP."""
    web = config.web
    if not is_loopback_host(web.host) and not (web.behind_proxy or web.allow_plain_http):
        raise ConfigError(f"[web] host = {web.host} is not loopback: the console speaks plain HTTP, so put it behind "
                          "a TLS reverse proxy (behind_proxy = yes) or say allow_plain_http = yes")


def build_console(config: Config) -> Console:
    from ...events.outbox import PENDING, SENDING, Outbox
    from ...storage.journal import Journal

    journal = Journal(config)
    outbox = Outbox(config.webhooks.outbox_dir)

    def spool_depth() -> int | None:
        try:
            return len(journal.spool)
        except Exception:
            return None

    def outbox_depth() -> int | None:
        try:
            counts = outbox.counts()
        except Exception:
            return None
        return counts[PENDING] + counts[SENDING]

    metrics = ConsoleMetrics(spool_depth=spool_depth, outbox_depth=outbox_depth,
                             calls_in_progress=lambda: live.in_progress())
    live = LiveCalls(observe=metrics.observe)  # counted as they arrive, before any page reads them
    return Console(config=config, store=journal.store, accounts=Accounts(config.web.users_file),
                   sessions=Sessions(config.web.session_hours), throttle=LoginThrottle(config.web.max_login_failures),
                   live=live, metrics=metrics)


class ConsoleServer:
    """The console on its address, and the live feed's listener; :meth:`run` until :meth:`stop`."""

    def __init__(self, config: Config) -> None:
        from waitress.server import create_server

        from ...events.live import LiveListener

        check_bind(config)
        self.config = config
        self.console = build_console(config)
        self.listener = LiveListener(config.web.live_socket, self.console.live.deliver)
        if config.web.transcribe_calls:
            from .transcripts import CallTranscriber

            self.console.transcriber = CallTranscriber(config, self.console.live.deliver)
        app = create_app(self.console)
        self.server: Any = create_server(app, host=config.web.host, port=config.web.port, threads=THREADS,
                                         ident="voiceassist", clear_untrusted_proxy_headers=False)
        self.port = int(self.server.effective_port)
        self._stopped = threading.Event()

    def run(self) -> None:
        self.listener.start()
        if self.console.transcriber is not None:
            self.console.transcriber.start_listening()
        threading.Thread(target=self._sample, daemon=True, name="voiceassist-web-spool").start()
        logger.info("[WEB] console on http://%s:%d/ (live feed %s)", self.config.web.host, self.port,
                    self.config.web.live_socket)
        try:
            self.server.run()
        except OSError:
            if not self._stopped.is_set():
                raise

    def _sample(self) -> None:
        while not self._stopped.wait(SPOOL_SAMPLE_SECONDS if self.console.metrics.spool_samples() else 1.0):
            self.console.metrics.sample_spool()

    def stop(self) -> None:
        self._stopped.set()
        self.console.live.close()
        self.listener.stop()
        if self.console.transcriber is not None:
            self.console.transcriber.stop()
        self.server.close()


def run_console(config: Config) -> int:
    server = ConsoleServer(config)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.stop, daemon=True).start())
    try:
        server.run()
    except KeyboardInterrupt:
        server.stop()
    return 0


def start_console_process(config_path: Path) -> subprocess.Popen[bytes]:
    """``serve`` with ``[web] enabled``: the console in a process of its own (its pages and live
    feed never share the interpreter lock with the calls)."""
    return subprocess.Popen([sys.executable, "-m", "voiceassist", "--config", str(config_path), "web"],
                            stdin=subprocess.DEVNULL)


# -- accounts -------------------------------------------------------------------------------------

def _write_accounts(path: Path, accounts: dict[str, Account]) -> None:
    """Replace the accounts file without following a link: root-owned, readable by the service's
    group (the console runs as the service user) when run as root."""
    data = accounts_text(accounts).encode("utf-8")
    if os.geteuid() == 0:
        try:
            group = pwd.getpwnam(SERVICE_USER).pw_gid
        except KeyError:
            group = 0
        with open_directory(path.parent, create=True, mode=0o755, owner=(0, 0)) as directory:
            directory.write(path.name, data, mode=0o640, owner=(0, group))
    else:
        with open_directory(path.parent, create=True, mode=0o700) as directory:
            directory.write(path.name, data, mode=0o600)


def add_user(config: Config, name: str, role: str, password: str, out: Callable[[str], None] = print) -> int:
    check_new_account(name, role, password)
    path = Path(config.web.users_file)
    accounts = read_accounts(path)
    existed = name in accounts
    accounts[name] = Account(name, role, hash_password(password))
    _write_accounts(path, accounts)
    out(f"{'updated' if existed else 'added'} {role} account {name} in {path}")
    return 0


def delete_user(config: Config, name: str, out: Callable[[str], None] = print) -> int:
    path = Path(config.web.users_file)
    accounts = read_accounts(path)
    if accounts.pop(name, None) is None:
        raise ConfigError(f"no account {name!r} in {path}")
    _write_accounts(path, accounts)
    out(f"deleted account {name} (its sessions end at their next request)")
    return 0


def list_users(config: Config, out: Callable[[str], None] = print) -> int:
    accounts = read_accounts(config.web.users_file)
    for account in sorted(accounts.values(), key=lambda a: a.name):
        out(f"{account.name}\t{account.role}")
    if not accounts:
        out(f"no accounts yet: voiceassist web adduser NAME --role admin   ({config.web.users_file})")
    return 0
