"""Who may use the web console: accounts, passwords, sessions, CSRF tokens, and login throttling.

Accounts live in ``[web] users_file``, one per line: ``name:role:scrypt$n$r$p$salt$hash``, written
by ``voiceassist web adduser`` (as root; the console only reads it). Passwords are hashed with
scrypt from the standard library (memory-hard, so a stolen file is slow to attack). Sessions are
kept in the console's memory: a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` behind TLS), each with its own CSRF token; a restart logs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError

ROLES = ("admin", "viewer")
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")
MIN_PASSWORD_CHARS = 10
# scrypt's cost: 2^15 × 8 × 128 bytes = 32 MB and about 0.1 s per login on one core.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
FAILURE_WINDOW_SECONDS = 300.0


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                p=int(p), maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# A hash of a random password: an unknown account costs a login the same time as a known one.
_DECOY = hash_password(secrets.token_hex(16))


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password_hash: str


def read_accounts(path: str | os.PathLike[str]) -> dict[str, Account]:
    """The accounts in ``path`` (none if it does not exist); malformed lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    accounts = {}
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and ACCOUNT_NAME.fullmatch(parts[0]) and parts[1] in ROLES:
            accounts[parts[0]] = Account(parts[0], parts[1], parts[2])
    return accounts


def accounts_text(accounts: dict[str, Account]) -> str:
    return "".join(f"{a.name}:{a.role}:{a.password_hash}\n" for a in sorted(accounts.values(), key=lambda a: a.name))


def check_new_account(name: str, role: str, password: str) -> None:
    if not ACCOUNT_NAME.fullmatch(name):
        raise ConfigError(f"account name {name!r}: 1 to 32 letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"the password needs at least {MIN_PASSWORD_CHARS} characters")


class Accounts:
    """The accounts file, read again when it changes (``adduser`` while the console runs)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Account | None:
        with self._lock:
            try:
                info = self.path.stat()
                stamp = (info.st_mtime_ns, info.st_size)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                self._accounts, self._stamp = read_accounts(self.path), stamp
            return self._accounts.get(name)

    def verify(self, name: str, password: str) -> Account | None:
        account = self.get(name)
        ok = check_password(password, account.password_hash if account else _DECOY)
        return account if ok and account is not None else None


@dataclass
class Session:
    account: str
    role: str
    csrf: str
    expires: float

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class Sessions:
    """Signed-in browsers: a random token → the account, its role and its CSRF token."""

    def __init__(self, hours: float) -> None:
        self.seconds = hours * 3600
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, account: Account) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(account.name, account.role, secrets.token_urlsafe(32), time.time() + self.seconds)
        with self._lock:
            now = time.time()
            for old in [t for t, s in self._sessions.items() if s.expires < now]:
                del self._sessions[old]
            self._sessions[token] = session
        return token, session

    def get(self, token: str | None, accounts: Accounts) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if session.expires < time.time():
                del self._sessions[token]
                return None
        # An account deleted, or its role changed, takes effect on the next request.
        account = accounts.get(session.account)
        if account is None or account.role != session.role:
            self.end(token)
            return None
        return session

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


@dataclass
class LoginThrottle:
    """At most ``limit`` failed logins per address and per account name in five minutes."""

    limit: int
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_seconds(self, *keys: str) -> int:
        """Seconds until another attempt for these keys is allowed (0: now)."""
        now = time.time()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if not times:
                    continue
                while times and times[0] < now - FAILURE_WINDOW_SECONDS:
                    times.popleft()
                if len(times) >= self.limit:
                    wait = max(wait, times[0] + FAILURE_WINDOW_SECONDS - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        with self._lock:
            if len(self._failures) > 10000:  # a flood of names: forget the oldest record
                self._failures.pop(next(iter(self._failures)))
            for key in keys:
                self._failures.setdefault(key, deque(maxlen=self.limit * 2)).append(time.time())

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
