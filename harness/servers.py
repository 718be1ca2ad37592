"""FastAGI servers for the tests: a ``voiceassist serve`` process, started and stopped as an admin
(or systemd) would, or a server inside the test's own process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant

FASTAGI_PORT = 4573  # the port in extensions_custom.conf's FastAGI variant


class FastAGIProcess:
    def __init__(self, config_path, port: int = FASTAGI_PORT, max_calls: int = 20, workers: int = 1) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voiceassist", "--config", str(config_path), "serve", "--port", str(port),
             "--max-calls", str(max_calls), "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if "listening" in line:
                return
        raise RuntimeError("FastAGI server did not start:\n" + "".join(self.output))

    def wait(self, timeout: float = 60) -> int:
        """Wait for the server to exit on its own (e.g. after a SIGTERM the test sent)."""
        out, _ = self.process.communicate(timeout=timeout)
        self.output.append(out)
        return self.process.returncode

    def stop(self, timeout: float = 60) -> int:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output.append(out)
        return self.process.returncode


@contextmanager
def in_process_fastagi(assistant: Assistant, max_calls: int = 4) -> Iterator[FastAGIServer]:
    """A FastAGI server in this process on a free loopback port (for a byte-level fake Asterisk)."""
    server = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=max_calls, read_timeout=10)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
