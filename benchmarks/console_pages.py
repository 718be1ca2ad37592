"""The web console's pages on a large database, side by side in one run.

    python -m benchmarks.console_pages [--turns 100000] [--requests 20] [--database-url URL]

Fills a database (SQLite in a temporary directory by default) with ``--turns`` turns, four per
call, spread over the last 30 days, then serves the console in this process and times each page
over HTTP as a logged-in admin: the first and a deep page of the calls list, its filters and the
search in transcripts, one call's page, and the statistics of 7 and 30 days. The first column
gives the median, the second the p90, the third the ratio to the first page of the list. For
comparison the last row times ``Store.recent_calls(limit=50)`` (what ``voiceassist calls``
reads), which summarises every call's turns before it takes 50.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from harness.console import ADMIN, ADMIN_PASSWORD, HTTPClient, add_accounts, console_conf, console_in_process, free_port
from voiceassist.providers import load_full_config
from voiceassist.storage.store import Store

WORDS = ("opening hours saturday sunday plumber invoice appointment price delivery refund manager address parking "
         "holiday emergency boiler heating leak quote warranty").split()


def fill(store: Store, turns: int) -> str:
    """``turns`` turns in calls of four; returns the uniqueid of a call in the middle."""
    store.ensure_schema()
    rng = random.Random(7)
    now = dt.datetime.now(dt.timezone.utc)
    calls, rows = [], []
    call_count = max(1, turns // 4)
    for n in range(call_count):
        started = now - dt.timedelta(seconds=rng.uniform(0, 30 * 86400))
        calls.append({"id": n + 1, "uniqueid": f"17650{n:05d}.{n % 97}", "linkedid": f"17650{n:05d}.{n % 97}",
                      "channel": f"PJSIP/{200 + n % 50}-{n:08x}", "caller_number": f"0{rng.randrange(10**9):09d}",
                      "caller_name": f"Caller {n}", "extension": "8008", "started_at": started,
                      "ended_at": started + dt.timedelta(minutes=2), "end_state": "done"})
        for t in range(1, 5):
            status = "ok" if rng.random() > 0.05 else rng.choice(("no_speech", "llm_error", "stt_error"))
            question = " ".join(rng.choice(WORDS) for _ in range(8))
            rows.append({"call_id": n + 1, "turn_number": t, "status": status, "transcript": question,
                         "reply": f"About {question}: we can help with that.", "stt_provider": "google_speech",
                         "llm_provider": rng.choice(("gemini", "openai_chat", "knowledge")), "tts_provider": "openai_tts",
                         "speech_to_audio_ms": int(rng.gauss(900, 200)), "stt_ms": int(rng.gauss(250, 50)),
                         "llm_first_ms": int(rng.gauss(400, 100)), "tts_ms": int(rng.gauss(200, 40)),
                         "first_audio_ms": int(rng.gauss(950, 200)), "interrupted": False,
                         "started_at": started + dt.timedelta(seconds=30 * t)})
    with store.engine.begin() as conn:
        for start in range(0, len(calls), 5000):
            conn.execute(store.calls.insert(), calls[start:start + 5000])
        for start in range(0, len(rows), 5000):
            conn.execute(store.turns.insert(), rows[start:start + 5000])
    return str(calls[len(calls) // 2]["uniqueid"])


def timed(work, requests: int) -> list[float]:
    work()  # warm: the first request compiles the query and reads the pages in
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory)
        port = free_port()
        path = data / "voiceassist.conf"
        extra = ""
        path.write_text(console_conf(data, port, extra))
        if args.database_url:
            path.write_text(path.read_text().replace(f"url = sqlite:///{data}/voiceassist.db", f"url = {args.database_url}"))
        add_accounts(path)
        config = load_full_config(str(path))
        store = Store(config.section("database").get("url"), config.database.table_prefix)
        started = time.perf_counter()
        middle = fill(store, args.turns)
        print(f"{args.turns} turns stored in {time.perf_counter() - started:.1f} s ({store.engine.dialect.name})")
        with console_in_process(config) as server:
            client = HTTPClient(f"http://127.0.0.1:{port}")
            assert client.login(ADMIN, ADMIN_PASSWORD) == 302

            def page(path: str):
                def get() -> None:
                    status, _, _ = client.request(path)
                    assert status == 200, (path, status)
                return get

            cases = [("calls, first page", page("/calls")),
                     ("calls, page 200 (offset 9950)", page("/calls?page=200")),
                     ("calls, one caller's number", page("/calls?caller=0123")),
                     ("calls, status llm_error", page("/calls?status=llm_error")),
                     ("calls, words in transcripts", page("/calls?q=boiler+leak")),
                     ("one call's page", page(f"/calls/{middle}")),
                     ("statistics, 7 days", page("/stats?days=7")),
                     ("statistics, 30 days", page("/stats?days=30")),
                     ("Store.recent_calls(limit=50)", lambda: store.recent_calls(limit=50))]
            results = [(name, timed(work, args.requests)) for name, work in cases]
        base = statistics.median(results[0][1])
        print(f"{'page':34} {'median':>9} {'p90':>9} {'× first page':>13}")
        for name, times in results:
            ordered = sorted(times)
            p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            print(f"{name:34} {statistics.median(times):7.1f} ms {p90:7.1f} ms {statistics.median(times) / base:12.2f}×")
        store.engine.dispose()


if __name__ == "__main__":
    main()
