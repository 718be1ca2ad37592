"""A live transcript of an ordinary call between two people on the rig's Asterisk 22: two channels
talk to each other (each playing spoken lines), an admin starts the transcript on the console's
live page, and both parties' lines appear labelled caller and callee, then are stored with the
call. Asterisk's manager interface lists the call and starts the two listening channels
(ChanSpy on an AudioSocket channel); Google's streaming recogniser is its gRPC emulator."""

from __future__ import annotations

import sqlite3
import time
import wave

import numpy as np
import pytest

from harness.console import ADMIN, ADMIN_PASSWORD, add_accounts, browser_login, chromium, console_in_process, free_port
from harness.helpers import rig_conf, streaming_providers
from harness.rig.asterisk import SHARED
from harness.rig.calls import CALLS_DIR, make_question, tone_seconds, wait_for_complete_wav
from voiceassist.asterisk.manager import Manager, manager_address
from voiceassist.providers import load_full_config

LINES = {  # marker Hz: (speaker, words)
    2300: ("caller", "Hello, I am calling about my invoice from March."),
    2600: ("callee", "Sure, can you give me the invoice number?"),
    2900: ("caller", "It is number four seven one nine."),
    3200: ("callee", "Thank you, I will send a corrected copy today."),
}


ANNOUNCEMENT_HZ = 1000  # the announcement both parties hear first: a 1 s tone here


@pytest.fixture
def transcribing_console(rig, emulators, speech_grpc, tmp_path):
    port = free_port()
    announcement = SHARED / "questions" / "transcribed-notice.wav"
    announcement.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(8000) / 8000
    with wave.open(str(announcement), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes((np.sin(2 * np.pi * ANNOUNCEMENT_HZ * t) * 8000).astype("<i2").tobytes())
    path = SHARED / "transcripts.conf"
    path.write_text(rig_conf(emulators, extra=f"""{streaming_providers(speech_grpc.endpoint)}
[web]
port = {port}
users_file = {tmp_path}/web-users
live_socket = {tmp_path}/live.sock
transcribe_calls = yes
manager = ami://rig:rig@127.0.0.1:{rig.ami_port}
transcribe_port = {free_port()}
transcribe_announcement = {announcement}
"""))
    add_accounts(path)
    config = load_full_config(str(path))
    with console_in_process(config) as server:
        yield server, f"http://127.0.0.1:{port}", config


def transcribed_call(channel_prefix: str, timeout: float = 30) -> tuple[dict, list[dict]]:
    """The ended call whose channel starts with ``channel_prefix`` in the rig's database, with its lines."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(SHARED / "voiceassist.db") as db:
            db.row_factory = sqlite3.Row
            call = db.execute("SELECT * FROM voiceassist_calls WHERE channel LIKE ? AND ended_at IS NOT NULL",
                              (channel_prefix + "%",)).fetchone()
            if call is not None:
                return dict(call), [dict(r) for r in db.execute(
                    "SELECT * FROM voiceassist_turns WHERE call_id = ? ORDER BY turn_number", (call["id"],))]
        if time.monotonic() > deadline:
            raise AssertionError(f"no ended transcribed call on {channel_prefix}")
        time.sleep(0.2)


def silence(seconds: float) -> str:
    """A sound of silence: a phone line sends frames while nobody speaks (a Local channel's
    Wait() sends none), and a whisper is heard only mixed into frames."""
    path = SHARED / "questions" / f"silence-{seconds}s.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(int(seconds * 8000) * 2))
    return str(path.with_suffix(""))


def talk(rig, key: str, sounds: dict[int, str]) -> None:
    """Two people: the caller's lines at 2.5 s and 8.5 s, the callee's answers in between. Both
    lines are silent but open at first (the announcement is whispered into their frames); later
    pauses send nothing, as silence suppression would."""
    a = f"{silence(2.5)}&{sounds[2300]}&~3&{sounds[2900]}&~7"
    b = f"{silence(5.5)}&{sounds[2600]}&~4&{sounds[3200]}&~8"
    rig.cli(f"dialplan set global VAT_{key}_A {a}")
    rig.cli(f"dialplan set global VAT_{key}_B {b}")
    rig.cli(f"channel originate Local/{key}@va-talk-a extension {key}@va-talk-b")


def test_an_admin_transcribes_a_call_between_two_people_both_sides_labelled_and_stored(
        rig, transcribing_console, speech_grpc, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, base, config = transcribing_console
    sounds = {hz: make_question(f"talk-{hz}", words, hz) for hz, (_, words) in LINES.items()}
    speech_grpc.transcripts.update({hz: words for hz, (_, words) in LINES.items()})
    # The emulator names a line by the marker tone at its start; the rest of a line after a pause
    # (its comma) carries no marker and gets no words, rather than a made-up sentence.
    speech_grpc.default_transcript = ""
    browser = chromium()
    try:
        browser_login(browser, base, ADMIN, ADMIN_PASSWORD)
        talk(rig, "9301", sounds)
        row = None
        deadline = time.monotonic() + 10
        while row is None and time.monotonic() < deadline:
            browser.get(base + "/live")
            rows = browser.find_elements(By.CSS_SELECTOR, '#pbx-calls tr[data-channel^="Local/9301@va-talk-a"]')
            row = rows[0] if rows else None
        assert row is not None, browser.page_source[-3000:]
        assert row.get_attribute("data-channel").endswith(";1")
        row.find_element(By.CSS_SELECTOR, "button.transcribe").click()
        assert "Transcribing" in browser.find_element(By.ID, "notice").text
        WebDriverWait(browser, 40).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "p.line.final")) >= 4)
        lines = [(p.get_attribute("data-speaker"), p.find_element(By.CSS_SELECTOR, ".words").text)
                 for p in browser.find_elements(By.CSS_SELECTOR, "p.line.final")]
        browser.save_screenshot(str(tmp_path / "transcript.png"))
    finally:
        browser.quit()
    assert lines == [LINES[hz] for hz in (2300, 2600, 2900, 3200)], lines
    with Manager(manager_address(config.web.manager)) as manager:
        deadline = time.monotonic() + 20
        while any("9301@va-talk" in c.get("Channel", "") for c in manager.channels()) and time.monotonic() < deadline:
            time.sleep(0.5)
    row, turns = transcribed_call("Local/9301@va-talk-a")
    assert row["end_state"] == "transcribed" and row["channel"].endswith(";1")
    assert [(t["speaker"], t["transcript"]) for t in turns] == [LINES[hz] for hz in (2300, 2600, 2900, 3200)]
    assert all(t["reply"] is None and t["stt_provider"] == "google_speech" for t in turns)
    # Both parties were told first (whispered to each by its listening channel), once each.
    for side in ("a", "b"):
        heard = CALLS_DIR / f"talk-9301-{side}.wav"
        wait_for_complete_wav(heard)
        assert tone_seconds(heard, ANNOUNCEMENT_HZ) == pytest.approx(1.0, abs=0.15), side


def test_transcripts_refuse_a_viewer_a_forged_form_an_unlisted_channel_and_an_unknown_audio_leg(
        rig, transcribing_console):
    import socket
    import uuid as uuids

    from harness.console import VIEWER, VIEWER_PASSWORD, HTTPClient
    from voiceassist.asterisk.audiosocket import HANGUP_FRAME, KIND_UUID, frame

    server, base, config = transcribing_console
    viewer = HTTPClient(base)
    viewer.login(VIEWER, VIEWER_PASSWORD)
    _, _, page = viewer.request("/live")
    assert b"pbx-calls" not in page, "a viewer was shown the PBX's calls"
    status, _, _ = viewer.request("/live/transcribe", {"csrf": viewer.csrf("/live"), "channel": "Local/1@x-1;1"})
    assert status == 403
    admin = HTTPClient(base)
    admin.login(ADMIN, ADMIN_PASSWORD)
    status, _, _ = admin.request("/live/transcribe", {"channel": "Local/1@x-1;1"})
    assert status == 403, "no CSRF token"
    for channel in ("Local/nobody@nowhere-00000000;1", "PJSIP/1\r\nAction: Originate", "../../etc/passwd"):
        status, headers, _ = admin.request("/live/transcribe", {"csrf": admin.csrf("/live"), "channel": channel})
        assert status == 302 and "Not+transcribed" in headers["Location"], (channel, headers.get("Location"))
    # Audio for a leg nobody started is hung up on, and nothing is transcribed.
    with socket.create_connection(("127.0.0.1", config.web.transcribe_port), timeout=5) as leg:
        leg.sendall(frame(KIND_UUID, uuids.uuid4().bytes) + frame(0x10, bytes(320)))
        assert leg.recv(3) == HANGUP_FRAME
    assert server.console.live.snapshot() == []


def test_doctor_checks_the_manager_login_and_the_modules_transcripts_need(rig, transcribing_console, tmp_path):
    import dataclasses

    from voiceassist.admin.doctor import Doctor

    server, base, config = transcribing_console
    doctor = Doctor(tmp_path / "voiceassist.conf", online=False)
    doctor.config = config
    assert doctor._transcripts().status == "OK"
    wrong = dataclasses.replace(config.web, manager=f"ami://rig:wrong@127.0.0.1:{rig.ami_port}")
    doctor.config = dataclasses.replace(config, typed={**config.typed, "web": wrong})
    check = doctor._transcripts()
    assert check.status == "FAIL" and "refused the login" in check.detail
