"""Every value from a call is validated before it names a file or a record.

Hostile requests go through the real FastAGI server (byte-level client, real SDKs against the
emulators) with ``keep_recordings = no``, so a path that got through would be read (sent to the
speech emulator) and then deleted: the decoys must survive unread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.fake_asterisk import FakeAsterisk, agi_env, call_recording, converse, fastagi_env, speech_wav
from harness.helpers import config_for, voiceassist_log
from voiceassist.asterisk.dialplan import (
    parse_hangup,
    parse_listen,
    parse_request,
    parse_turn,
    validate_uniqueid,
)
from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant
from voiceassist.errors import RequestError

APOLOGY = "custom/voiceassist/cant-answer"
UID = "1700000000.1"
OTHER = "1700000000.2"


@pytest.fixture
def served(emulators, tmp_path):
    """A running server whose turns delete their recording (keep_recordings = no); yields a
    function that sends one session and returns (variables set, commands, log)."""
    assistant = Assistant(config_for(emulators, tmp_path, extra="[general]\nkeep_recordings = no\nplayback = file\n"))
    server = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=4, read_timeout=10)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def send(args: list[str], uniqueid: str = UID, channel: str = "PJSIP/1001-00000001"):
        with voiceassist_log() as log:
            client = FakeAsterisk(server.server_address[1], fastagi_env("voiceassist", uniqueid, args, channel=channel))
            client.run()
            return client.variables(), client.commands, log()

    yield send
    server.shutdown()
    server.server_close()


@pytest.fixture
def answer_dir(tmp_path) -> Path:
    return tmp_path / "spool/voiceassist"  # config_for's [general] answer_dir


@pytest.fixture
def decoy(tmp_path) -> Path:
    """Speech outside every call's directory (a WAV the attacker would like transcribed)."""
    path = tmp_path / "elsewhere" / "secret-meeting.wav"
    path.parent.mkdir()
    return speech_wav(path)


def turn_args(recording: str, *rest: str) -> list[str]:
    return ["turn", recording, "NOISE", *(rest or ("1", str(int(time.time())), "8008", UID))]


def assert_refused(variables: dict, log: str, emulators) -> None:
    assert variables == {"VA_ANSWER": APOLOGY, "VA_CONTINUE": "0", "VOICEASSIST_STATUS": "error"}
    assert "request refused" in log
    assert emulators["speech"].requests == []  # nothing was transcribed (nor paid for)


# -- recordings outside the call's own directory ------------------------------------------------
def hostile_recordings(answer_dir: Path, decoy: Path) -> dict[str, str]:
    other = call_recording(answer_dir, OTHER)  # another caller's question, waiting in its own directory
    own = answer_dir / UID
    own.mkdir(parents=True, exist_ok=True)
    (own / "question-1.wav").symlink_to(decoy)
    (own / "question-2.wav").symlink_to(other)
    (answer_dir / "1700000000.3").symlink_to(decoy.parent, target_is_directory=True)
    os.mkfifo(own / "question-9.wav")
    (own / "answer-1.ulaw").write_bytes(b"\xff" * 800)
    return {
        "absolute path elsewhere": str(decoy),
        "dot-dot out of the call directory": f"{own}/../../../elsewhere/{decoy.name}",
        "another call's directory": str(other),
        "dot-dot into another call": f"{own}/../{OTHER}/question-1.wav",
        "link in the call directory to elsewhere": str(own / "question-1.wav"),
        "link in the call directory to another call": str(own / "question-2.wav"),
        "relative path": "question-1.wav",
        "the call directory itself": str(own),
        "a FIFO in the call directory": str(own / "question-9.wav"),
        "not a WAV (the call's own answer)": str(own / "answer-1.ulaw"),
        "NUL inside": f"{own}/question-1.wav\x00.wav",
    }


CASES = ["absolute path elsewhere", "dot-dot out of the call directory", "another call's directory",
         "dot-dot into another call", "link in the call directory to elsewhere",
         "link in the call directory to another call", "relative path", "the call directory itself",
         "a FIFO in the call directory", "not a WAV (the call's own answer)", "NUL inside"]


@pytest.mark.parametrize("case", CASES)
def test_a_recording_outside_the_calls_directory_is_neither_read_nor_deleted(served, emulators, answer_dir,
                                                                               decoy, case):
    path = hostile_recordings(answer_dir, decoy)[case]
    before = {p: p.read_bytes() for p in (decoy, answer_dir / OTHER / "question-1.wav", answer_dir / UID / "answer-1.ulaw")}
    variables, commands, log = served(turn_args(path))
    assert_refused(variables, log, emulators)
    for file, content in before.items():
        assert file.read_bytes() == content, f"{file} was changed or deleted"
    assert not list(decoy.parent.glob("answer-*")) and not list((answer_dir / OTHER).glob("answer-*"))


@pytest.mark.parametrize("case", ["absolute path elsewhere", "another call's directory",
                                  "link in the call directory to elsewhere"])
def test_the_hangup_action_never_deletes_outside_the_calls_directory(served, emulators, answer_dir, decoy, case):
    path = hostile_recordings(answer_dir, decoy)[case]
    variables, _, log = served(["hangup", "recording", path, "1", "8008", UID])
    assert variables["VA_ANSWER"] == APOLOGY and "request refused" in log
    assert decoy.exists() and (answer_dir / OTHER / "question-1.wav").exists()


def test_a_valid_turn_reads_and_deletes_only_its_own_recording(served, emulators, answer_dir):
    """The control case: the same server does read and delete a recording in the call's directory."""
    own = call_recording(answer_dir, UID)
    other = call_recording(answer_dir, OTHER)
    variables, _, _ = served(turn_args(str(own)))
    assert variables["VOICEASSIST_STATUS"] == "ok" and len(emulators["speech"].requests) == 1
    assert not own.exists() and other.exists()  # keep_recordings = no
    assert variables["VA_ANSWER"] == f"{answer_dir}/{UID}/answer-1"  # answers under answer_dir/<uniqueid>/


@pytest.mark.parametrize("uniqueid", ["..", ".", "../1700000000", "1.1/..", "x/1.1", "1700000000", "1.1\\..",
                                      "a" * 200 + "-1.1", "-1.1", "1.1 "])
def test_a_uniqueid_that_is_not_asterisks_writes_and_reads_nothing(served, emulators, tmp_path, answer_dir, uniqueid):
    recording = speech_wav(tmp_path / "question.wav")
    variables, _, log = served(["turn", str(recording), "NOISE", "1", "", "8008", ""], uniqueid=uniqueid)
    assert_refused(variables, log, emulators)
    assert not list(tmp_path.rglob("answer-*"))  # with "..": the answer would have gone to answer_dir/..


@pytest.mark.parametrize("position,value", [  # turn number, call start, recording stopped, silence waited (ms)
    (3, "nan"), (3, "inf"), (3, "-1"), (3, "0"), (3, "1e3"), (3, "99999999999"), (3, "0x10"), (3, "\u0661"),
    (4, "nan"), (4, "inf"), (4, "-1700000000"), (4, "1e9"), (4, "99999999999999"),
    (7, "nan"), (7, "-inf"), (8, "-700"), (8, "nan"), (8, "86400000"),
])
def test_numbers_must_be_plain_bounded_decimals(served, emulators, answer_dir, position, value):
    args = turn_args(str(call_recording(answer_dir, UID)), "1", str(int(time.time())), "8008", UID,
                     f"{time.time():.3f}", "700")
    args[position] = value
    variables, _, log = served(args)
    assert_refused(variables, log, emulators)
    assert value[:20] in log or repr(value)[1:-1][:20] in log  # the reason names the value


# -- the parsers themselves ---------------------------------------------------------------------
@pytest.mark.parametrize("uniqueid", ["1717171717.42", "pbx1-1717171717.42", "pbx.example.com-1717171717.42",
                                      "ask-1700000000.12345", "1.2"])
def test_asterisk_and_ask_uniqueids_pass(uniqueid):
    assert validate_uniqueid(uniqueid) == uniqueid


@pytest.mark.parametrize("uniqueid", ["", ".", "..", "1.1.", ".1", "1.", "1.1\n", "\u0661\u0662.3", "x" * 151,
                                      "pbx/1-1.1", "-pbx-1.1"])
def test_other_uniqueids_are_refused(uniqueid):
    with pytest.raises(RequestError, match="uniqueid"):
        validate_uniqueid(uniqueid)


def env(uniqueid: str = UID) -> dict[str, str]:
    return {"agi_uniqueid": uniqueid, "agi_channel": "PJSIP/1001-00000001", "agi_callerid": "unknown",
            "agi_calleridname": "Alice", "agi_extension": "s"}


def test_a_turn_request_is_typed_and_its_recording_resolved(answer_dir):
    recording = call_recording(answer_dir, UID)
    request = parse_turn(env(), [str(recording), "", "2", "1700000000", "8008", "1699999999.7", "1700000010.500",
                                 "700"], str(answer_dir))
    assert request.recording == recording.resolve() and request.heard == "NOISE" and request.turn_number == 2
    assert request.call.caller_number == "" and request.call.linkedid == "1699999999.7"
    assert request.speech_ended == pytest.approx(1700000009.8)
    with pytest.raises(AttributeError):
        request.turn_number = 3  # type: ignore[misc]  # frozen


def test_hangup_ignores_the_recording_argument_unless_a_question_was_being_recorded(answer_dir):
    # ${VA_QUESTION}.wav is ".wav" before the first question: never used, so never an error.
    request = parse_hangup(env(), ["", ".wav", "0", "8008", ""], str(answer_dir))
    assert request.state == "idle" and request.recording is None and request.turn_number == 0
    with pytest.raises(RequestError):
        parse_hangup(env(), ["recording", ".wav", "1", "8008", ""], str(answer_dir))
    with pytest.raises(RequestError, match="call state"):
        parse_hangup(env(), ["DROP TABLE", "", "1", "8008", ""], str(answer_dir))


def test_listen_settings_are_bounded(answer_dir):
    target = str(answer_dir / UID / "question-1.wav")  # not recorded yet: fine
    request = parse_listen(env(), [target, "8", "700", "60", "answer", "1", "1700000000", "8008", ""], str(answer_dir))
    assert (request.grace_s, request.end_ms, request.max_s, request.answer) == (8.0, 700, 60.0, True)
    for index, value in ((1, "nan"), (2, "0"), (3, "inf"), (4, "yes"), (2, "-700")):
        args = [target, "8", "700", "60", "", "1", "1700000000", "8008", ""]
        args[index] = value
        with pytest.raises(RequestError):
            parse_listen(env(), args, str(answer_dir))


def test_unknown_actions_and_a_missing_channel_are_refused(answer_dir):
    with pytest.raises(RequestError, match="unknown action"):
        parse_request(env(), ["listen", "x"], str(answer_dir))  # EAGI only, never over FastAGI
    with pytest.raises(RequestError, match="agi_channel"):
        parse_request({"agi_uniqueid": UID}, ["hangup"], str(answer_dir))


def test_the_eagi_listener_refuses_a_target_outside_the_calls_directory(tmp_path, decoy):
    """`voiceassist agi listen` would have written the question over any file it could write."""
    config = tmp_path / "voiceassist.conf"
    config.write_text(f"[general]\nanswer_dir = {tmp_path}/answers\n[logging]\nfile = {tmp_path}/va.log\n")
    content = decoy.read_bytes()
    read_end, write_end = os.pipe()
    os.write(write_end, b"\0" * 3200)
    code, commands, stderr = converse([sys.executable, "-m", "voiceassist", "--config", str(config), "agi"],
                                      agi_env(["listen", str(decoy), "1", "700", "2"], enhanced=True),
                                      audio_fd=read_end)
    os.close(write_end)
    os.close(read_end)
    assert code == 0 and "Traceback" not in stderr
    # The dialplan plays the apology (VA_DONE: as after an answer) instead of recording anything.
    assert commands == [f'SET VARIABLE "VA_ANSWER" "{APOLOGY}"', 'SET VARIABLE "VA_CONTINUE" "0"',
                        'SET VARIABLE "VOICEASSIST_STATUS" "error"', 'SET VARIABLE "VA_DONE" "1"']
    assert decoy.read_bytes() == content
    assert "request refused" in (tmp_path / "va.log").read_text() and "not inside this call's directory" in \
        (tmp_path / "va.log").read_text()


# -- history: uniqueid *and* channel ------------------------------------------------------------
def test_a_spoofed_uniqueid_from_another_channel_gets_no_history(served, emulators, answer_dir):
    emulators["gemini"].reply = lambda body: "Your account number is 4417."
    victim = "PJSIP/1001-00000001"
    first = call_recording(answer_dir, UID, 1)
    variables, _, _ = served(turn_args(str(first), "1", str(int(time.time())), "8008", UID), channel=victim)
    assert variables["VOICEASSIST_STATUS"] == "ok"
    emulators["gemini"].reply = lambda body: "Hello."
    # Another channel names the victim's uniqueid (a recording in the victim's directory is all it can use).
    spoof = call_recording(answer_dir, UID, 2)
    variables, _, log = served(turn_args(str(spoof), "2", str(int(time.time())), "8008", UID),
                               channel="PJSIP/6666-00000009")
    assert variables["VOICEASSIST_STATUS"] == "ok"
    sent = emulators["gemini"].requests[-1].body.decode()
    assert "4417" not in sent and len(emulators["gemini"].requests[-1].json()["contents"]) == 1
    assert "history withheld" in log
    # The victim's own next turn still has its history (the check above could fail).
    third = call_recording(answer_dir, UID, 3)
    served(turn_args(str(third), "3", str(int(time.time())), "8008", UID), channel=victim)
    assert "4417" in emulators["gemini"].requests[-1].body.decode()


def test_kept_audio_of_any_call_id_stays_inside_the_answer_directory(tmp_path):
    """Real-time turns keep their audio in the call's directory; an id that is not Asterisk's
    (an ai-server session's, or a hostile one) gets a plain name inside the answer directory."""
    from voiceassist.call.realtime import _audio_directory

    assert _audio_directory(str(tmp_path), "1700000000.1") == tmp_path.resolve() / "1700000000.1"
    for hostile in ("..", "../../etc", "ai-1/../../x", ".hidden", "a\nb", "x" * 500):
        directory = _audio_directory(str(tmp_path), hostile)
        assert directory.parent == tmp_path.resolve() and directory.name not in (".", "..")
        assert "/" not in directory.name and not directory.name.startswith(".") and len(directory.name) <= 64
