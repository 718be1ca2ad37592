"""The web console watching a real call on the rig's Asterisk 22: a real-time call (AudioSocket,
Google's streaming recogniser through its gRPC emulator) appears on the live page while it
happens, the caller's words first as the recogniser's guess and then final, then the reply; once
it has ended it is in the calls list and its page plays both audio files. The console is started
by ``serve`` itself (``[web] enabled``), as an admin without the systemd unit would run it."""

from __future__ import annotations


import pytest

from harness.console import (ADMIN, ADMIN_PASSWORD, add_accounts, audio_duration, browser_login, chromium, free_port,
                             wait_for_port)
from harness.helpers import rig_conf, streaming_providers
from harness.rig.asterisk import SHARED
from harness.rig.calls import make_question, place_call, stored_call
from harness.servers import FastAGIProcess

HOURS, HOURS_HZ = "What are your opening hours?", 2200
LIVE_CONTEXT, LIVE_FASTAGI_PORT, LIVE_AUDIOSOCKET_PORT = "va-live", 4579, 4580  # the rig's [va-live]

# Records every state of the live page's first turn (a MutationObserver: nothing is missed between polls).
WATCH_TURNS = """
window.__seen = [];
const root = document.getElementById("live-calls");
new MutationObserver(() => {
  for (const turn of root.querySelectorAll("[data-call] [data-turn='1']")) {
    const question = turn.querySelector(".question");
    const reply = turn.querySelector(".reply-words");
    window.__seen.push({call: turn.closest("[data-call]").dataset.call, cls: question.className,
                        words: question.querySelector(".words").textContent,
                        reply: reply ? reply.textContent : ""});
  }
}).observe(root, {childList: true, subtree: true});
"""


@pytest.fixture(scope="module")
def watched_server(rig, emulators, speech_grpc, tmp_path_factory):
    data = tmp_path_factory.mktemp("console")
    port = free_port()
    path = SHARED / "console.conf"
    path.write_text(rig_conf(emulators, extra=f"""{streaming_providers(speech_grpc.endpoint)}
[live]
transport = audiosocket
audiosocket_port = {LIVE_AUDIOSOCKET_PORT}
[web]
enabled = yes
port = {port}
users_file = {data}/web-users
live_socket = {data}/live.sock
"""))
    add_accounts(path)
    server = FastAGIProcess(path, port=LIVE_FASTAGI_PORT)
    try:
        wait_for_port(port)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_a_rig_call_is_seen_live_then_listed_with_both_audio_files(rig, watched_server, speech_grpc, emulators,
                                                                   tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, base = watched_server
    speech_grpc.transcripts[HOURS_HZ] = HOURS
    question = make_question("console-hours", HOURS, HOURS_HZ)
    browser = chromium()
    try:
        browser_login(browser, base, ADMIN, ADMIN_PASSWORD)
        browser.get(base + "/live")
        WebDriverWait(browser, 10).until(lambda d: "connected" in d.find_element(By.ID, "live-state").text)
        browser.execute_script(WATCH_TURNS)
        call = place_call(rig, "9010", [question], context=LIVE_CONTEXT, listen=5)
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(
            "return window.__seen.some(s => s.reply)"))
        browser.save_screenshot(str(tmp_path / "live-call.png"))
        call.wait(timeout=90)
        seen = browser.execute_script("return window.__seen")
        row, turns = stored_call("9010")
        ours = [s for s in seen if s["call"] == row["uniqueid"]]
        interim = [s for s in ours if "interim" in s["cls"] and s["words"] not in ("", "…")]
        final = [i for i, s in enumerate(ours) if "final" in s["cls"]]
        replied = [i for i, s in enumerate(ours) if s["reply"]]
        # The recogniser's guesses came first (growing word by word), then the final words, then the reply.
        assert interim and HOURS.lower().startswith(interim[0]["words"].lower().rstrip(".?")), ours[:5]
        assert final and ours[final[0]]["words"] == HOURS and ours.index(interim[0]) < final[0] <= replied[0], ours
        assert turns[0]["reply"].startswith(ours[replied[-1]]["reply"].split(".")[0])
        # After the call: in the list, and its page plays the question and the answer.
        browser.get(base + "/calls?caller=9010")
        link = browser.find_element(By.CSS_SELECTOR, f'tr[data-call="{row["uniqueid"]}"] a')
        link.click()
        assert HOURS in browser.find_element(By.CSS_SELECTOR, "#turn-1 .transcript").text
        durations = [audio_duration(browser, f"#turn-1 audio.{kind}-audio") for kind in ("question", "answer")]
        assert durations[0] > 1.0 and durations[1] == pytest.approx(turns[0]["played_ms"] / 1000, abs=0.1), durations
        browser.save_screenshot(str(tmp_path / "call-page.png"))
    finally:
        browser.quit()
    log = (SHARED / "voiceassist.log").read_text(errors="replace")
    assert "Traceback" not in log

