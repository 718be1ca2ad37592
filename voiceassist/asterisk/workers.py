"""FastAGI worker processes: ``[fastagi] workers`` processes sharing the listening socket.

One Python process runs one thread at a time, and parsing many streamed answers at once (the SDKs
build an object per chunk) fills one core; worker processes each serve their share of the calls
with their own SDK clients. The supervisor passes SIGTERM/SIGINT on, and stops the rest when one
dies (systemd's ``Restart=on-failure`` then starts the service again).
"""

from __future__ import annotations

import os
import signal

from ..logs import logger


def supervise(workers: int) -> int | None:
    """Fork the workers; in the parent, wait for them (SIGTERM/SIGINT are passed on) and return
    None. In a worker, return its number (0 to workers - 1) at once: it goes on to serve (its
    real-time media server listens on the configured port plus that number)."""
    children: set[int] = set()
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            return index
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
    return None
