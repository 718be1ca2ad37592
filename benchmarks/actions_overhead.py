"""What the call actions, tools, webhooks and memory cost a turn, side by side in one run.

    python -m benchmarks.actions_overhead [--turns N]

An in-process FastAGI server answers turns placed by a byte-level fake Asterisk (the tests'
harness), with the real SDKs against emulators that answer at once, so a turn's time is the
toolkit's own work: reading the recording, speech-to-text, the model's request and reply, speech,
conversion, storage. Each configuration answers ``--turns`` turns (the first of each is left out);
the table gives the median and p90 wall time of a turn, the CPU it took, and the ratio to the
configuration without any of them. The last row is a turn whose model calls an HTTP tool on a
loopback server (one extra model request and one HTTP request on the path). Then the cost of
queueing one webhook event (``emit``: a file written and fsync'd per receiver).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
from harness.helpers import config_for
from harness.webhook_receiver import Receiver
from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant
from voiceassist.config import Webhooks
from voiceassist.events.outbox import Outbox
from voiceassist.events.webhooks import emit
from voiceassist.types import ToolCall

SECRET = "bench-secret-0123456789"
DESTINATIONS = """[destinations]
reception = from-internal,200,1 | The front desk
sales = ext-queues,400,1 | The sales team: quotes and new orders
[actions]
operator = reception
"""


class Shop:
    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"order": "AB-123", "status": "shipped"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def tools_file(directory: Path, shop: Shop) -> Path:
    path = directory / "tools.json"
    path.write_text(json.dumps({"tools": [{
        "name": "order_status", "description": "The status of an order, by its number.",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
        "url": f"{shop.url}/orders/{{order}}"}]}))
    path.chmod(0o640)
    return path


def run_turns(emulators: dict, directory: Path, extra: str, turns: int) -> tuple[list[float], list[float]]:
    assistant = Assistant(config_for(emulators, directory, extra=extra))
    assistant.prepare()
    server = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=2, read_timeout=10)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    walls, cpus = [], []
    try:
        for n in range(turns + 1):
            uniqueid = f"1700001000.{n}"
            wav = call_recording(directory / "spool/voiceassist", uniqueid)
            env = fastagi_env("voiceassist", uniqueid, ["turn", str(wav), "NOISE", "1", str(int(time.time())), "8008",
                                                         uniqueid], callerid="5550100")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            FakeAsterisk(server.server_address[1], env).run()
            if n:  # the first turn warms up the clients and the database
                walls.append((time.perf_counter() - wall0) * 1000)
                cpus.append((time.process_time() - cpu0) * 1000)
    finally:
        server.shutdown()
        server.server_close()
    return walls, cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30)
    args = parser.parse_args(argv)
    emulators = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
                 "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    shop, up, down = Shop(), Receiver(), Receiver()
    down.stop()
    with tempfile.TemporaryDirectory() as temporary:
        base = Path(temporary)
        tools = tools_file(base, shop)
        hooks = f"[webhooks]\nsecret = {SECRET}\noutbox_dir = {base}/outbox-{{name}}\nurls = {{url}}\n"
        configurations = [
            ("nothing (no actions, tools, webhooks or memory)", "[actions]\nend_call = no\n", None),
            ("actions: destinations, end_call, offline phrases", DESTINATIONS, None),
            ("actions and an HTTP tool offered (not called)", DESTINATIONS + f"[tools]\nfile = {tools}\n", None),
            ("actions and webhooks, receiver up", DESTINATIONS + hooks.format(name="up", url=up.url()), None),
            ("actions and webhooks, receiver down", DESTINATIONS + hooks.format(name="down", url=down.url()), None),
            ("actions and memory (earlier calls looked up)", DESTINATIONS + "[memory]\nenabled = yes\n", None),
            ("the model calls the HTTP tool (2 model requests + 1 HTTP)",
             DESTINATIONS + f"[tools]\nfile = {tools}\n", "tool"),
        ]
        rows = []
        for number, (label, extra, mode) in enumerate(configurations):
            emulators["gemini"].reset()
            if mode == "tool":
                def reply(body: dict) -> str | ToolCall:
                    last = body["contents"][-1]["parts"][0]
                    if "functionResponse" in last:
                        return "Your order has shipped."
                    return ToolCall("order_status", {"order": "AB-123"})
                emulators["gemini"].reply = reply
            walls, cpus = run_turns(emulators, base / f"c{number}", extra, args.turns)
            rows.append((label, statistics.median(walls), statistics.quantiles(walls, n=10)[-1], statistics.median(cpus)))
        baseline = rows[0][1]
        print(f"\nA turn's own time ({args.turns} turns each, emulators answering at once), ms:\n")
        print("| configuration | median | p90 | CPU (median) | × nothing |")
        print("|---|---|---|---|---|")
        for label, median, p90, cpu in rows:
            print(f"| {label} | {median:.0f} | {p90:.0f} | {cpu:.0f} | {median / baseline:.2f}× |")
        outbox = Outbox(base / "emit")
        settings = Webhooks(urls=(down.url(), down.url("/second")), secret=SECRET)
        costs = []
        for _ in range(200):
            started = time.perf_counter()
            emit(settings, outbox, "turn.completed", {"turn": {"transcript": "x" * 200}})
            costs.append((time.perf_counter() - started) * 1000)
        print(f"\nQueueing one event for two receivers (emit: two files written and fsync'd): median "
              f"{statistics.median(costs):.2f} ms, p99 {statistics.quantiles(costs, n=100)[-1]:.2f} ms")
    for server in emulators.values():
        server.close()
    up.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
