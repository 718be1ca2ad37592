"""A byte-level stand-in for Asterisk's side of a FastAGI session (for server tests)."""

from __future__ import annotations

import socket
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def fastagi_env(script: str = "voiceassist", uniqueid: str = "1700000000.1", args: list[str] | None = None,
                port: int = 4573, channel: str = "PJSIP/1001-00000001", callerid: str = "1001") -> bytes:
    network = ["agi_network: yes", f"agi_network_script: {script}", f"agi_request: agi://127.0.0.1:{port}/{script}"]
    return _env(network, uniqueid, args, enhanced=False, channel=channel, callerid=callerid)


def agi_env(args: list[str] | None = None, *, enhanced: bool = False, uniqueid: str = "1700000000.1") -> bytes:
    """The environment block Asterisk writes to a process AGI (EAGI: ``enhanced``)."""
    return _env(["agi_request: voiceassist"], uniqueid, args, enhanced=enhanced)


def _env(first: list[str], uniqueid: str, args: list[str] | None, enhanced: bool,
         channel: str = "PJSIP/1001-00000001", callerid: str = "1001") -> bytes:
    lines = [*first,
             f"agi_channel: {channel}", "agi_language: en", "agi_type: PJSIP", f"agi_uniqueid: {uniqueid}",
             "agi_version: 22.10.1", f"agi_callerid: {callerid}", "agi_calleridname: Alice", "agi_callingpres: 0",
             "agi_callingani2: 0", "agi_callington: 0", "agi_callingtns: 0", "agi_dnid: 8008", "agi_rdnis: unknown",
             "agi_context: voiceassist-flow", "agi_extension: s", "agi_priority: 24",
             f"agi_enhanced: {'1.0' if enhanced else '0.0'}", "agi_accountcode: ", "agi_threadid: 1"]
    lines += [f"agi_arg_{i}: {a}" for i, a in enumerate(args or [], 1)]
    return ("\n".join(lines) + "\n\n").encode()


def speech_wav(path: Path, seconds: float = 1.5) -> Path:
    rng = np.random.default_rng(7)
    pcm = (rng.normal(0, 3000, int(seconds * 8000))).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(pcm.tobytes())
    return path


def call_recording(answer_dir: Path, uniqueid: str, turn: int = 1, seconds: float = 1.5) -> Path:
    """A question recorded where the real dialplan records it: ``<answer_dir>/<uniqueid>/question-<turn>.wav``
    (the turn refuses a recording outside its call's directory)."""
    directory = Path(answer_dir) / uniqueid
    directory.mkdir(parents=True, exist_ok=True)
    return speech_wav(directory / f"question-{turn}.wav", seconds)


class FakeAsterisk:
    """Connects like Asterisk, sends the environment, answers every command with ``200 result=1``."""

    def __init__(self, port: int, env: bytes, timeout: float = 30, source: str | None = None) -> None:
        # ``source``: the address to connect from (127.0.0.2 ... are loopback too, but another peer)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.sendall(env)
        self.file = self.sock.makefile("rb")
        self.commands: list[str] = []

    def run(self) -> list[str]:
        for raw in self.file:
            line = raw.decode().rstrip("\n")
            self.commands.append(line)
            self.sock.sendall(b"200 result=1\n")
        self.file.close()
        self.sock.close()
        return self.commands

    def variables(self) -> dict[str, str]:
        found = {}
        for command in self.commands:
            words = asterisk_parse_args(command)
            if words[:2] == ["SET", "VARIABLE"]:
                found[words[2]] = words[3]
        return found


@dataclass
class Conversation:
    """What a process AGI did, as Asterisk saw it (times in seconds from the spawn)."""

    code: int
    commands: list[str]
    command_times: list[float]
    stderr: str
    exited: float
    peak_rss_mb: float


def run_process_agi(argv: list[str], env: bytes, *, timeout: float = 60, audio_fd: int | None = None,
                    environ: dict[str, str] | None = None) -> Conversation:
    """Run a process AGI as Asterisk does: the environment first, then one reply per command line
    (never ahead of the command, as the real Asterisk); ``audio_fd`` becomes the EAGI audio fd 3."""
    import os
    import subprocess
    import threading
    import time

    def audio_on_fd_3() -> None:
        if audio_fd is not None:
            os.dup2(audio_fd, 3)

    started = time.monotonic()
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=environ, preexec_fn=audio_on_fd_3, pass_fds=(3,) if audio_fd is not None else ())
    assert process.stdin and process.stdout and process.stderr
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    commands: list[str] = []
    times: list[float] = []
    try:
        process.stdin.write(env)
        process.stdin.flush()
        for raw in process.stdout:
            times.append(time.monotonic() - started)
            line = raw.decode("utf-8", "replace").rstrip("\n")
            commands.append(line)
            reply = b"200 result=0 endpos=8000\n" if line.startswith("STREAM FILE") else b"200 result=1\n"
            try:
                process.stdin.write(reply)
                process.stdin.flush()
            except BrokenPipeError:
                break
        process.stdin.close()
        stderr = process.stderr.read().decode("utf-8", "replace")
        process.stdout.close()
        process.stderr.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return Conversation(process.returncode, commands, times, stderr, time.monotonic() - started,
                            usage.ru_maxrss / 1024)
    finally:
        timer.cancel()


def converse(argv: list[str], env: bytes, timeout: float = 60,
             audio_fd: int | None = None) -> tuple[int, list[str], str]:
    """:func:`run_process_agi`, returning (exit code, commands, stderr)."""
    result = run_process_agi(argv, env, timeout=timeout, audio_fd=audio_fd)
    return result.code, result.commands, result.stderr


def asterisk_parse_args(line: str) -> list[str]:
    """Asterisk's res_agi parse_args(): space/tab separate, '"' toggles quoting, '\\' escapes."""
    args, current, quoted, escaped, started = [], [], False, False, False
    for char in line:
        if escaped:
            current.append(char)
            escaped, started = False, True
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted, started = not quoted, True
        elif char in " \t" and not quoted:
            if started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        args.append("".join(current))
    return args
