"""The calls in progress as the console knows them from the live feed, and the browsers watching.

Each browser on the live page holds one server-sent-events stream: it gets a snapshot of the
calls in progress, then every event as it comes. A browser that stops reading is dropped rather
than allowed to hold events in memory.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

MAX_CALLS = 500
ENDED_KEPT_SECONDS = 60.0       # an ended call stays on the live page this long
SILENT_CALL_SECONDS = 4 * 3600  # a call never said to end (its process died) is forgotten after this
WATCHER_QUEUE = 1000
# Browsers on the live page at once: each holds one of the server's threads while it watches.
MAX_WATCHERS = 16


class LiveCalls:
    def __init__(self, observe: Callable[[dict[str, Any]], None] = lambda event: None) -> None:
        self._observe = observe
        self._calls: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._watchers: set[queue.Queue[str | None]] = set()
        self._lock = threading.Lock()

    # -- from the feed ------------------------------------------------------------------------
    def deliver(self, event: dict[str, Any]) -> None:
        self._observe(event)
        with self._lock:
            self._update(event)
            self._forget_old(time.time())
            message = _sse("call", event)
            for watcher in list(self._watchers):
                try:
                    watcher.put_nowait(message)
                except queue.Full:  # a browser that stopped reading
                    self._watchers.discard(watcher)
                    _close(watcher)

    def _update(self, event: dict[str, Any]) -> None:
        uniqueid, kind = event["call"], event["type"]
        call = self._calls.get(uniqueid)
        if call is None:
            if kind == "call.ended":
                return
            call = {"call": uniqueid, "from": {}, "started": event["at"], "turns": {}, "lines": {}, "ended": None,
                    "state": None, "transcript": False}
            self._calls[uniqueid] = call
            while len(self._calls) > MAX_CALLS:
                self._calls.popitem(last=False)
        call["seen"] = event["at"]
        if kind == "call.started" and isinstance(event.get("from"), dict):
            call["from"], call["transcript"] = event["from"], bool(event.get("transcript"))
        elif kind == "transcript.words":
            number = event.get("line")
            if isinstance(number, int) and 0 < number < 100000 and event.get("speaker") in ("caller", "callee"):
                line = call["lines"].setdefault(str(number), {"speaker": event["speaker"], "text": "", "final": False})
                if not line["final"]:
                    line["text"], line["final"] = event.get("text") or "", bool(event.get("final"))
        elif kind == "call.ended":
            call["ended"], call["state"] = event["at"], event.get("state")
        elif kind in ("caller.words", "reply.words", "turn.completed"):
            number = event.get("turn") if kind != "turn.completed" else (event.get("turn") or {}).get("turn_number")
            if not isinstance(number, int) or not 0 < number < 10000:
                return
            turn = call["turns"].setdefault(str(number), {"caller": "", "final": False, "reply": "", "status": None})
            if kind == "caller.words" and not turn["final"]:
                turn["caller"], turn["final"] = event.get("text") or "", bool(event.get("final"))
            elif kind == "reply.words":
                turn["reply"] = event.get("text") or ""
            elif kind == "turn.completed":
                done = event["turn"]
                turn.update(caller=done.get("transcript") or turn["caller"], final=True,
                            reply=done.get("reply") or turn["reply"], status=done.get("status"))

    def _forget_old(self, now: float) -> None:
        for uniqueid, call in list(self._calls.items()):
            ended = call["ended"]
            if (ended is not None and now - ended > ENDED_KEPT_SECONDS) or now - call["seen"] > SILENT_CALL_SECONDS:
                del self._calls[uniqueid]

    # -- for the pages ------------------------------------------------------------------------
    def in_progress(self) -> int:
        with self._lock:
            return sum(1 for call in self._calls.values() if call["ended"] is None)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            self._forget_old(time.time())
            return json.loads(json.dumps(list(self._calls.values())))  # type: ignore[no-any-return]

    def watch(self) -> queue.Queue[str | None] | None:
        """A queue of what to send one browser (None: too many are watching already)."""
        watcher: queue.Queue[str | None] = queue.Queue(WATCHER_QUEUE)
        with self._lock:
            if len(self._watchers) >= MAX_WATCHERS:
                return None
            watcher.put_nowait(_sse("snapshot", list(self._calls.values())))
            self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: queue.Queue[str | None]) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    def close(self) -> None:
        with self._lock:
            for watcher in self._watchers:
                _close(watcher)
            self._watchers.clear()


def _sse(name: str, data: Any) -> str:
    # JSON on one line: the data is never read as anything but JSON by the page's script.
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _close(watcher: queue.Queue[str | None]) -> None:
    try:
        watcher.put_nowait(None)
    except queue.Full:
        pass
