"""A ``voiceassist serve`` process, started and stopped as an admin (or systemd) would."""

from __future__ import annotations

import subprocess
import sys
import time

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
