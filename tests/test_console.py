"""The web console on its own (no Asterisk): logging in, the calls pages in a real headless
Chromium, what it refuses (no session, no CSRF token, a viewer asking for audio, hostile caller
names, too many failed logins, a live event from another user), the live feed, and /metrics."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.console import (ADMIN, ADMIN_PASSWORD, VIEWER, VIEWER_PASSWORD, HTTPClient, add_accounts, audio_duration,
                             browser_login, chromium, console_conf, console_in_process, free_port)
from voiceassist.admin.console.accounts import check_password, read_accounts
from voiceassist.admin.console.server import check_bind
from voiceassist.errors import ConfigError
from voiceassist.events.live import LiveFeed, LiveListener
from voiceassist.providers import load_full_config
from voiceassist.storage.journal import Journal
from voiceassist.types import CallInfo, TurnRecord

HOSTILE_NAME = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x10\x00\xf0\xff" * int(seconds * rate / 2))


@pytest.fixture
def console(tmp_path):
    port = free_port()
    path = tmp_path / "voiceassist.conf"
    path.write_text(console_conf(tmp_path, port))
    add_accounts(path)
    config = load_full_config(str(path))
    journal = Journal(config)
    answers = tmp_path / "answers" / "1765000000.7"
    question, answer = answers / "question-1.wav", answers / "answer-1.ulaw"
    write_wav(question, 1.5)
    answer.write_bytes(b"\x7f\xff" * 8000)  # 2 s of μ-law, as the AGI flow writes answers
    now = dt.datetime.now(dt.timezone.utc)
    hostile = CallInfo("1765000000.7", "1765000000.7", "PJSIP/100-00000007", "100", HOSTILE_NAME, "8008")
    journal.add_turn(hostile, TurnRecord(1, transcript="When are you open on Saturday?", reply="From 9 to 1.",
                                         recording_path=str(question), answer_path=str(answer),
                                         stt_provider="google_speech", llm_provider="gemini", tts_provider="openai_tts",
                                         language="es-ES", timings={"speech_to_audio": 840, "stt": 210, "llm_first": 320, "tts": 190,
                                                  "first_audio": 880}, started_at=now - dt.timedelta(hours=3)))
    journal.end_call(hostile, "done")
    for n in range(60):  # enough for two pages
        call = CallInfo(f"1765000100.{n}", channel=f"PJSIP/200-{n:08x}", caller_number=f"555{n:04d}",
                        caller_name=f"Caller {n}", extension="8008")
        journal.add_turn(call, TurnRecord(1, status="ok" if n % 5 else "llm_error", transcript=f"question number {n}",
                                          reply=f"answer {n}", stt_provider="pocketsphinx", llm_provider="knowledge",
                                          timings={"speech_to_audio": 500 + 10 * n},
                                          started_at=now - dt.timedelta(hours=n)))
    with console_in_process(config) as server:
        server.base = f"http://127.0.0.1:{port}"
        yield server


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def screenshot(driver, tmp_path: Path, name: str) -> None:
    # Kept as artifacts under the test's own directory (looked at when the console changes).
    driver.save_screenshot(str(tmp_path / f"{name}.png"))


def test_a_request_without_a_session_is_sent_to_the_login_page(console):
    client = HTTPClient(console.base)
    for path in ("/calls", "/calls/1765000000.7", "/live", "/live/events", "/stats", "/audio/1765000000.7/1/answer"):
        status, headers, _ = client.request(path)
        assert status == 302 and headers["Location"].startswith("/login?next=/"), (path, status)
    status, headers, page = client.request("/login")
    assert status == 200 and "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]


def test_accounts_are_stored_with_scrypt_and_never_in_clear(console, tmp_path):
    text = (tmp_path / "web-users").read_text()
    assert ADMIN_PASSWORD not in text and VIEWER_PASSWORD not in text
    accounts = read_accounts(tmp_path / "web-users")
    assert accounts[ADMIN].role == "admin" and accounts[VIEWER].role == "viewer"
    assert accounts[ADMIN].password_hash.startswith("scrypt$32768$8$1$")
    assert check_password(ADMIN_PASSWORD, accounts[ADMIN].password_hash)
    assert not check_password(ADMIN_PASSWORD + "x", accounts[ADMIN].password_hash)
    assert (tmp_path / "web-users").stat().st_mode & 0o077 in (0, 0o040)


def test_adduser_replaces_a_link_at_the_accounts_file_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "target"
    target.write_text("not an accounts file\n")
    path = tmp_path / "voiceassist.conf"
    path.write_text(console_conf(tmp_path, 4580))
    (tmp_path / "web-users").symlink_to(target)
    add_accounts(path)
    assert target.read_text() == "not an accounts file\n"
    assert not (tmp_path / "web-users").is_symlink() and ADMIN in read_accounts(tmp_path / "web-users")


def test_a_short_password_or_a_bad_name_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "voiceassist.conf"
    path.write_text(console_conf(tmp_path, 4580))
    for name, password, message in (("bob", "short", "at least 10"), ("bob:admin", "long enough password", "letters")):
        result = subprocess.run([sys.executable, "-m", "voiceassist", "--config", str(path), "web", "adduser", name,
                                 "--password-stdin"], input=password + "\n", text=True, capture_output=True)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_state_change_without_the_csrf_token_is_refused(console):
    client = HTTPClient(console.base)
    assert client.login(ADMIN, ADMIN_PASSWORD) == 302
    for form in ({}, {"csrf": "forged"}):
        status, _, page = client.request("/calls/1765000000.7/delete", form)
        assert status == 403 and b"expired" in page
    # With the token but from another site's page: refused too.
    token = client.csrf()
    status, _, _ = client.request("/calls/1765000000.7/delete", {"csrf": token}, {"Origin": "http://evil.example"})
    assert status == 403
    status, _, _ = client.request("/calls/1765000000.7")
    assert status == 200, "the call was deleted without a valid token"


def test_a_viewer_reads_transcripts_but_cannot_fetch_audio_or_delete(console):
    viewer = HTTPClient(console.base)
    assert viewer.login(VIEWER, VIEWER_PASSWORD) == 302
    status, _, page = viewer.request("/calls/1765000000.7")
    assert status == 200 and b"When are you open on Saturday?" in page and b"<audio" not in page
    for kind in ("question", "answer"):
        status, _, _ = viewer.request(f"/audio/1765000000.7/1/{kind}")
        assert status == 403
    status, _, _ = viewer.request("/calls/1765000000.7/delete", {"csrf": viewer.csrf()})
    assert status == 403
    admin = HTTPClient(console.base)
    admin.login(ADMIN, ADMIN_PASSWORD)
    status, headers, wav = admin.request("/audio/1765000000.7/1/answer")
    assert status == 200 and headers["Content-Type"] == "audio/wav" and wav[:4] == b"RIFF"


def test_audio_outside_the_answer_directory_is_never_served(console, tmp_path):
    secret = tmp_path / "secret.wav"
    write_wav(secret, 0.5)
    link_dir = tmp_path / "answers" / "1765000200.1"
    link_dir.mkdir(parents=True)
    (link_dir / "question-1.wav").symlink_to(secret)
    journal = Journal(load_full_config(str(tmp_path / "voiceassist.conf")))
    call = CallInfo("1765000200.1", caller_number="999")
    journal.add_turn(call, TurnRecord(1, transcript="x", recording_path=str(secret),
                                      answer_path=str(link_dir / "question-1.wav")))
    admin = HTTPClient(console.base)
    admin.login(ADMIN, ADMIN_PASSWORD)
    for kind in ("question", "answer"):
        status, _, _ = admin.request(f"/audio/1765000200.1/1/{kind}")
        assert status == 404, kind


def test_too_many_failed_logins_are_refused_for_a_while(console):
    client = HTTPClient(console.base)
    statuses = [client.login(ADMIN, "wrong password!") for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert client.login(ADMIN, ADMIN_PASSWORD) == 429  # even the right password, until the window passes


def test_the_calls_list_pages_filters_and_searches(console):
    client = HTTPClient(console.base)
    client.login(VIEWER, VIEWER_PASSWORD)
    _, _, first = client.request("/calls")
    rows = re.findall(rb'<tr data-call="([^"]+)"', first)
    assert len(rows) == 50 and rows[0] == b"1765000100.0" and b'rel="next"' in first
    _, _, second = client.request("/calls?page=2")
    assert len(re.findall(rb'<tr data-call=', second)) == 11 and b'rel="next"' not in second
    _, _, errors = client.request("/calls?status=llm_error")
    assert len(re.findall(rb'<tr data-call=', errors)) == 12
    _, _, found = client.request("/calls?q=number+42")
    assert re.findall(rb'<tr data-call="([^"]+)"', found) == [b"1765000100.42"]
    _, _, literal = client.request("/calls?q=%25")  # a LIKE wildcard is searched for as itself
    assert not re.findall(rb'<tr data-call=', literal)
    _, _, caller = client.request("/calls?caller=5550007")
    assert re.findall(rb'<tr data-call="([^"]+)"', caller) == [b"1765000100.7"]


def test_in_the_browser_a_hostile_caller_name_is_text_and_the_call_plays_its_audio(console, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser_login(browser, console.base, ADMIN, ADMIN_PASSWORD)
    browser.get(console.base + "/calls?caller=script")
    cell = browser.find_element(By.CSS_SELECTOR, 'tr[data-call="1765000000.7"] td.caller')
    assert HOSTILE_NAME in cell.text
    assert not browser.find_elements(By.CSS_SELECTOR, "td.caller img, td.caller script")
    screenshot(browser, tmp_path, "calls")
    browser.get(console.base + "/calls/1765000000.7")
    assert HOSTILE_NAME in browser.find_element(By.ID, "caller").text
    assert browser.find_element(By.CSS_SELECTOR, "#turn-1 .language").text == "es-ES"  # the language it was served in
    durations = {}
    for kind in ("question", "answer"):
        durations[kind] = audio_duration(browser, f"audio.{kind}-audio")
    assert durations["question"] == pytest.approx(1.5, abs=0.05) and durations["answer"] == pytest.approx(2.0, abs=0.05)
    screenshot(browser, tmp_path, "call")
    logs = browser.get_log("browser") if hasattr(browser, "get_log") else []
    assert not [entry for entry in logs if "Content Security Policy" in entry.get("message", "")], logs


def test_the_stats_page_shows_plots_of_latency_and_volume(console, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser_login(browser, console.base, VIEWER, VIEWER_PASSWORD)
    browser.get(console.base + "/stats?days=7")
    latency = browser.find_element(By.CSS_SELECTOR, "#chart-latency svg")
    assert latency.size["height"] > 100
    assert browser.find_elements(By.CSS_SELECTOR, '#chart-latency g.series[data-series="p50"] polyline')
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-calls rect.bar")) >= 3
    assert "61 turns" in browser.find_element(By.CSS_SELECTOR, "p.summary").text
    # speech_to_audio of the 60 listed calls is 500 + 10 n ms, and 840 ms for the hostile caller's.
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, '#stages tr[data-stage="speech_to_audio"] td')]
    assert cells == ["speech_to_audio", "61", "800 ms", "1030 ms", "1090 ms"], cells
    screenshot(browser, tmp_path, "stats")


def test_live_events_appear_in_the_browser_as_they_happen(console, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser_login(browser, console.base, VIEWER, VIEWER_PASSWORD)
    browser.get(console.base + "/live")
    WebDriverWait(browser, 10).until(lambda d: "connected" in d.find_element(By.ID, "live-state").text)
    feed = LiveFeed(console.config.web.live_socket)
    feed.publish("call.started", "1765000300.1", **{"from": {"caller_number": "0301", "caller_name": HOSTILE_NAME,
                                                               "extension": "8008"}})
    words = lambda: browser.find_element(By.CSS_SELECTOR, '[data-call="1765000300.1"] [data-turn="1"] .question')
    feed.publish("caller.words", "1765000300.1", turn=1, text="what are", final=False)
    WebDriverWait(browser, 5).until(lambda d: "what are" in words().text)
    assert "interim" in words().get_attribute("class")
    feed.publish("caller.words", "1765000300.1", turn=1, text="what are your hours", final=True)
    WebDriverWait(browser, 5).until(lambda d: "final" in words().get_attribute("class"))
    feed.publish("reply.words", "1765000300.1", turn=1, text="We open at nine.")
    WebDriverWait(browser, 5).until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-call="1765000300.1"] .reply-words'))
    assert HOSTILE_NAME in browser.find_element(By.CSS_SELECTOR, '[data-call="1765000300.1"] h2').text
    screenshot(browser, tmp_path, "live")
    feed.publish("call.ended", "1765000300.1", state="done")
    WebDriverWait(browser, 5).until(lambda d: "ended" in d.find_element(
        By.CSS_SELECTOR, 'article[data-call="1765000300.1"]').get_attribute("class"))


def test_live_events_from_another_local_user_or_malformed_are_refused(console, tmp_path):
    assert os.stat(console.config.web.live_socket).st_mode & 0o777 == 0o660
    # A listener whose socket everyone may reach: only root's and its own user's events count.
    directory = Path(tempfile.mkdtemp(prefix="va-live-"))
    events: list[dict] = []
    listener = LiveListener(directory / "live.sock", events.append)
    try:
        directory.chmod(0o755)
        (directory / "live.sock").chmod(0o666)
        listener.start()
        sender = ("import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
                  f"s.sendto(b'{{\"type\":\"call.started\",\"call\":\"1765000400.1\",\"at\":1}}', "
                  f"{str(directory / 'live.sock')!r})")
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", sender],
                       check=True, cwd="/")
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for payload in (b"not json", b'{"type":"rm -rf","call":"1"}', b'{"type":"call.started","call":"../../etc"}',
                        b"[" * 16000):
            raw.sendto(payload, str(directory / "live.sock"))
        raw.sendto(b'{"type":"call.started","call":"1765000400.2"}', str(directory / "live.sock"))
        raw.close()
        deadline = time.monotonic() + 3
        while listener.refused + listener.received < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.refused == 5 and [e["call"] for e in events] == ["1765000400.2"]
    finally:
        listener.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_metrics_count_what_the_calls_told_the_console(console, tmp_path):
    from voiceassist.events.outbox import Outbox
    from voiceassist.events.webhooks import new_event

    Outbox(tmp_path / "outbox").add(new_event("call.ended", {}), "http://127.0.0.1:9/hook")  # one event waiting
    feed = LiveFeed(console.config.web.live_socket)
    feed.publish("call.started", "1765000500.1", **{"from": {"extension": "8008"}})
    feed.publish("provider.failed", "1765000500.1", capability="llm", provider="gemini", kind="ProviderTimeout")
    turn = {"turn_number": 1, "status": "ok", "providers": {"stt": "google_speech", "llm": "openai_chat", "tts": "piper"},
            "timings_ms": {"speech_to_audio": 700, "stt": 150, "llm": 400, "tts": 120}}
    feed.publish("turn.completed", "1765000500.1", turn=turn)
    feed.publish("turn.completed", "1765000500.1", turn={**turn, "turn_number": 2, "status": "no_speech",
                                                         "timings_ms": {}})
    feed.publish("call.ended", "1765000500.1", state="done")
    deadline = time.monotonic() + 3
    while console.listener.received < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    client = HTTPClient(console.base)
    status, _, body = client.request("/metrics")
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples[("voiceassist_calls_total", (("extension", "8008"),))] == 1
    assert samples[("voiceassist_turns_total", (("status", "ok"),))] == 1
    assert samples[("voiceassist_turns_total", (("status", "no_speech"),))] == 1
    assert samples[("voiceassist_provider_errors_total", (("capability", "llm"), ("kind", "providertimeout"),
                                                          ("provider", "gemini")))] == 1
    assert samples[("voiceassist_fallbacks_total", (("capability", "llm"),))] == 1
    assert samples[("voiceassist_speech_to_audio_seconds_count", ())] == 1
    assert samples[("voiceassist_speech_to_audio_seconds_sum", ())] == pytest.approx(0.7)
    assert samples[("voiceassist_provider_seconds_bucket", (("capability", "llm"), ("le", "0.5"),
                                                            ("provider", "openai_chat")))] == 1
    assert samples[("voiceassist_calls_ended_total", (("state", "done"),))] == 1
    assert samples[("voiceassist_spool_depth", ())] == 0
    assert samples[("voiceassist_outbox_depth", ())] == 1
    # Through a proxy (it adds X-Forwarded-For) the metrics are not served.
    status, _, _ = client.request("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 403


def test_a_console_beyond_loopback_needs_a_proxy_or_plain_http_said_out_loud(tmp_path):
    for extra, refused in (("host = 0.0.0.0", True), ("host = 192.0.2.1\nbehind_proxy = yes", False),
                           ("host = 0.0.0.0\nallow_plain_http = yes", False), ("host = ::1", False)):
        path = tmp_path / "voiceassist.conf"
        path.write_text(console_conf(tmp_path, 4580, extra))
        config = load_full_config(str(path))
        if refused:
            with pytest.raises(ConfigError, match="behind_proxy"):
                check_bind(config)
        else:
            check_bind(config)


def test_doctor_fails_an_accounts_file_others_can_change_and_sees_the_console_answer(console, tmp_path):
    from voiceassist.admin.doctor import Doctor

    doctor = Doctor(tmp_path / "voiceassist.conf", online=False)
    doctor.config = console.config
    users = tmp_path / "web-users"
    users.chmod(0o666)
    checks = {c.name: c for c in doctor.web_console()}
    assert checks["web accounts"].status == "FAIL" and "admin" in checks["web accounts"].detail
    assert checks["web console"].status == "OK" and "answers on" in checks["web console"].detail
    users.chmod(0o640)
    checks = {c.name: c for c in doctor.web_console()}
    assert checks["web accounts"].status == "OK" and "2 accounts, 1 admin" in checks["web accounts"].detail


def test_an_admin_deletes_a_call_with_its_audio(console, tmp_path):
    admin = HTTPClient(console.base)
    admin.login(ADMIN, ADMIN_PASSWORD)
    question = tmp_path / "answers" / "1765000000.7" / "question-1.wav"
    assert question.exists()
    status, headers, _ = admin.request("/calls/1765000000.7/delete", {"csrf": admin.csrf("/calls/1765000000.7")},
                                       {"Origin": console.base})
    assert status == 302 and headers["Location"] == "/calls"
    assert admin.request("/calls/1765000000.7")[0] == 404
    assert not question.exists() and not (tmp_path / "answers" / "1765000000.7" / "answer-1.ulaw").exists()
