"""Through the real Asterisk 22 of the rig: the FastAGI secret in the dialplan's URL, caller IDs
that carry line breaks (Asterisk sends them raw inside the AGI environment), a forged complete
environment block in a caller name, and answers played from a path with a space."""

from __future__ import annotations

import re
import sqlite3

import pytest

from harness.rig.asterisk import SHARED, free_port
from harness.rig.calls import make_question, place_call
from harness.helpers import rig_conf
from harness.servers import FastAGIProcess
from tests.test_rig_calls import OPENING_HOURS, answer_heard, db_rows, playbacks
from voiceassist.asterisk.dialplan import fastagi_url
from voiceassist.config import load_config

SECRET = "rig/s3cret+ü"
# A caller name that completes the environment block itself (the rest of the keys, arguments
# asking the hangup action to delete a file outside the call, the blank line), then goes on, so
# the blank line is inside the name (Asterisk trims one at its end): the real rest of Asterisk's
# block follows the forged one.
FORGED_NAME = (b"Mallory\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\n"
               b"agi_dnid: 8008\nagi_rdnis: unknown\nagi_context: voiceassist-flow\nagi_extension: s\n"
               b"agi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 1\nagi_arg_1: hangup\n"
               b"agi_arg_2: recording\nagi_arg_3: /etc/passwd.wav\nagi_arg_4: 1\n\nMallory")


@pytest.fixture(scope="module")
def questions():
    return {"hours": make_question("hours", OPENING_HOURS, 2200)}


@pytest.fixture(autouse=True)
def _transcripts(emulators):
    emulators["speech"].transcripts = {2200: OPENING_HOURS}


class Guarded:
    """A second `voiceassist serve` with a secret, whose answer directory's path has a space (a
    link to the spool, so the dialplan's recordings are inside it)."""

    def __init__(self, emulators) -> None:
        spaced = SHARED / "answers with space"
        if not spaced.is_symlink():
            spaced.symlink_to("spool/voiceassist", target_is_directory=True)  # relative: same in the chroot
        self.port = free_port()
        self.config_path = SHARED / "fastagi-guarded.conf"
        self.config_path.write_text(rig_conf(emulators, extra=(
            f"[general]\nanswer_dir = {spaced}\n[fastagi]\nport = {self.port}\nsecret = {SECRET}\n")))
        self.url = fastagi_url(load_config(self.config_path, environ={}))
        self.process = FastAGIProcess(self.config_path, port=self.port)


@pytest.fixture(scope="module")
def guarded(rig, emulators):
    server = Guarded(emulators)
    yield server
    server.process.stop()


def channel_rows(key: str) -> list[dict]:
    """The stored calls of test call ``key`` (by its 8008-side channel); none if nothing was ever stored."""
    with sqlite3.connect(SHARED / "voiceassist.db") as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM voiceassist_calls WHERE channel LIKE ?",
                                                (f"Local/{key}@va-test-entry-%",))]
        except sqlite3.OperationalError as exc:
            assert "no such table" in str(exc)
            return []


def server_log() -> str:
    return (SHARED / "voiceassist.log").read_text(errors="replace")


# -- the secret in the AGI URL -----------------------------------------------------------------
def test_the_secret_url_reaches_the_server_and_the_answer_plays_from_a_path_with_a_space(
        rig, guarded, emulators, questions):
    assert "?secret=rig%2Fs3cret%2B%C3%BC" in guarded.url
    call = place_call(rig, "9101", [questions["hours"]], context="va-test-agi", agi=guarded.url)
    call.wait()
    row, turns = db_rows("9101")
    assert turns[0]["status"] == "ok", turns[0]["error"]
    assert "answers with space" in turns[0]["answer_path"]
    # STREAM FILE "<...>/answers with space/<uniqueid>/answer-1-part1": Asterisk found and played it.
    played = playbacks(rig, "9101", "answers with space")
    assert any(f"answers with space/{row['uniqueid']}/answer-1-part1" in p for p in played), played
    assert answer_heard(call, turns[0]["reply"]) >= 1.2


def test_a_wrong_secret_in_the_url_makes_the_caller_hear_the_apology(rig, guarded, emulators, questions):
    wrong = guarded.url.split("?", 1)[0] + "?secret=guess"
    call = place_call(rig, "9102", [questions["hours"]], context="va-test-agi", agi=wrong)
    call.wait()
    # The server said only FAILURE: AGISTATUS=FAILURE, and the dialplan played the apology.
    assert any("cant-answer" in p for p in playbacks(rig, "9102", "cant-answer"))
    assert rig.wait_for_log(r"AGI\(\"Local/9102@va-test-entry-[0-9a-f]+;2\", \"agi://")
    assert channel_rows("9102") == []  # no turn ran, nor the hangup action
    assert emulators["speech"].requests == []
    assert "wrong or missing secret" in server_log()
    assert "Traceback" not in server_log()


# -- caller IDs with line breaks -----------------------------------------------------------------
def line_breaks(variant: str, key: str) -> dict[str, bytes]:
    """place_call's caller ID arguments: a name or a number (with the key: it finds the call) that
    carry keys of the environment block after line breaks."""
    if variant == "name":
        return {"caller_name": b"Eve\nagi_uniqueid: 1.1\nagi_channel: PJSIP/victim-00000001\nagi_arg_1: hangup"}
    return {"caller_number_bytes": key.encode() + b"\nagi_uniqueid: 1.1\n\nagi_network_script: other?secret=x"}


@pytest.mark.parametrize("variant", ["name", "number"])
@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_a_caller_id_with_line_breaks_overrides_no_key(rig, fastagi, emulators, questions, context, variant):
    key = {"voiceassist": "91", "voiceassist-fastagi": "92"}[context] + {"name": "11", "number": "12"}[variant]
    caller_id = line_breaks(variant, key)
    call = place_call(rig, key, [questions["hours"]], context=context, **caller_id)
    call.wait()
    [row] = channel_rows(key)
    assert re.fullmatch(r"\d{10}\.\d+", row["uniqueid"]) and row["uniqueid"] != "1.1"
    assert row["channel"].startswith(f"Local/{key}@va-test-entry-")
    _, turns = db_rows(row["caller_number"])
    assert turns[0]["status"] == "ok", turns[0]["error"]
    assert answer_heard(call, turns[0]["reply"]) >= 1.2
    # The whole caller ID, line breaks and all, is the caller ID.
    injected = next(iter(caller_id.values())).decode()
    assert (row["caller_name"] if variant == "name" else row["caller_number"]) == injected
    assert "Traceback" not in server_log()


@pytest.mark.parametrize("context", ["voiceassist", "voiceassist-fastagi"])
def test_a_forged_environment_block_in_the_caller_name_is_refused_with_the_apology(
        rig, fastagi, emulators, questions, context):
    key = {"voiceassist": "9301", "voiceassist-fastagi": "9302"}[context]
    call = place_call(rig, key, [questions["hours"]], context=context, caller_name=FORGED_NAME)
    call.wait()
    assert any("cant-answer" in p for p in playbacks(rig, key, "cant-answer"))
    assert channel_rows(key) == []  # nothing ran on the forged arguments (nor on the real ones)
    assert emulators["speech"].requests == []
    assert "data right after the AGI environment" in server_log()
    assert "Traceback" not in server_log()
    assert (rig.host_path("/etc/passwd")).exists()
