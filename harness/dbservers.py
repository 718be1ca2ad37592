"""Real MariaDB and PostgreSQL servers for the tests, from Debian's packages (no Docker here).

Each runs as its own system user from a data directory under /tmp, on a loopback port, and can be
stopped, killed and started again on the same data (the spool tests take the database away
mid-call). Applications connect with a password over TCP, as voiceassist would on a PBX.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

APP_USER = "voiceassist"
APP_PASSWORD = "pw with 'quotes' & @:/ signs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"database server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"database server did not listen on {port} within {timeout} s")


def _quote_url(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


class MariaDBServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="va-mariadb-"))
        shutil.chown(self.root, "mysql", "mysql")
        self.datadir = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        subprocess.run(["mariadb-install-db", "--user=mysql", f"--datadir={self.datadir}", "--skip-test-db",
                        "--auth-root-authentication-method=socket"], check=True, capture_output=True)
        self.start()
        password = APP_PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
        self.sql(f"CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED BY '{password}';"
                 f"GRANT ALL ON *.* TO '{APP_USER}'@'127.0.0.1';")

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={self.datadir}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             "--max-connections=200", f"--log-error={self.root / 'error.log'}", f"--pid-file={self.root / 'pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, 60, self.process)

    def sql(self, statements: str, database: str = "") -> str:
        return subprocess.run(["mariadb", f"--socket={self.socket}", "-uroot", "-N", "-B", "-e", statements,
                               *([database] if database else [])], check=True, capture_output=True,
                              text=True).stdout

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:10]}"
        self.sql(f"CREATE DATABASE {name} CHARACTER SET latin1")  # as old FreePBX CDR databases are
        return name

    def url(self, database: str, scheme: str = "mysql") -> str:
        return f"{scheme}://{APP_USER}:{_quote_url(APP_PASSWORD)}@127.0.0.1:{self.port}/{database}"

    def kill(self) -> None:
        """Take the server away abruptly (SIGKILL: no goodbye to connected clients)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PostgreSQLServer:
    def __init__(self) -> None:
        bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.bin = Path(bindir)
        self.root = Path(tempfile.mkdtemp(prefix="va-postgres-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.datadir = self.root / "data"
        self.port = _free_port()
        password_file = self.root / "pw"
        password_file.write_text("unused-superuser-password\n")
        shutil.chown(password_file, "postgres", "postgres")
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.datadir), "-U", "postgres", "-E", "UTF8",
                           "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"])
        self.start()
        password = APP_PASSWORD.replace("'", "''")
        self.sql(f"CREATE USER {APP_USER} WITH SUPERUSER PASSWORD '{password}'")

    def _as_postgres(self, command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True,
                              text=True, cwd="/tmp")

    def start(self) -> None:
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "log"), "-w",
                           "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200",
                           "start"])
        _wait_for_port(self.port, 60)

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._as_postgres(["psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", database,
                                  "-At", "-c", statement]).stdout

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:10]}"
        self.sql(f"CREATE DATABASE {name} OWNER {APP_USER}")
        return name

    def url(self, database: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{APP_USER}:{_quote_url(APP_PASSWORD)}@127.0.0.1:{self.port}/{database}"

    def kill(self) -> None:
        """Immediate shutdown: every connection is cut, as when the server crashes."""
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def servers_available() -> str | None:
    """Why the servers cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "starting MariaDB/PostgreSQL as their own users needs root (run the README's test command)"
    if not shutil.which("mariadbd") or not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "mariadb-server/postgresql are not installed (tests/setup.sh installs them)"
    return None
