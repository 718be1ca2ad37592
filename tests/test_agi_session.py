"""The AGI session against byte-level Asterisk replies the rig cannot easily produce."""

from __future__ import annotations

import io
import socket
import threading

import pytest
from asterisk import agi as pyst2

from harness.fake_asterisk import asterisk_parse_args
from voiceassist.asterisk.agi import MAX_COMMAND_BYTES, AGISession, quote_argument, sanitize_text
from voiceassist.errors import (
    AGIConnectionClosed,
    AGIDeadChannel,
    AGIHangup,
    AGIInvalidCommand,
    AGIProtocolError,
    AGIUsageError,
)

ENV = (b"agi_request: voiceassist\nagi_channel: PJSIP/1001-00000007\nagi_language: en\nagi_type: PJSIP\n"
       b"agi_uniqueid: 1717171717.42\nagi_version: 22.10.1\nagi_callerid: 1001\nagi_calleridname: Alice\n"
       b"agi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 8008\n"
       b"agi_rdnis: unknown\nagi_context: voiceassist-flow\nagi_extension: s\nagi_priority: 24\n"
       b"agi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 140226405308096\nagi_arg_1: turn\nagi_arg_2: \n\n")


def session(replies: bytes, env: bytes = ENV) -> tuple[AGISession, io.BytesIO]:
    out = io.BytesIO()
    return AGISession(io.BytesIO(env + replies), out), out


def test_environment_is_parsed_including_empty_values():
    agi, _ = session(b"")
    assert agi.env["agi_uniqueid"] == "1717171717.42"
    assert agi.env["agi_accountcode"] == ""
    assert agi.arguments() == ["turn", ""]


def test_newline_in_caller_name_does_not_end_the_environment_early():
    env = ENV.replace(b"agi_calleridname: Alice\n", b"agi_calleridname: Eve\n\nHANGUP\nagi_x\n")
    agi, _ = session(b"200 result=1\n", env)
    assert agi.env["agi_calleridname"] == "Eve\n\nHANGUP\nagi_x"
    assert agi.env["agi_threadid"] == "140226405308096"
    agi.verbose("still in step")  # the next read is the real reply, not a leftover env line


def test_non_utf8_caller_id_is_replaced_not_fatal():
    agi, _ = session(b"", ENV.replace(b"Alice", b"caf\xe9 \xff"))
    assert agi.env["agi_calleridname"] == "caf\ufffd \ufffd"


def test_commands_are_bytes_with_one_newline():
    agi, out = session(b"200 result=1\n")
    agi.set_variable("VA_ANSWER", "/x/answer-1")
    assert out.getvalue() == b'SET VARIABLE "VA_ANSWER" "/x/answer-1"\n'


@pytest.mark.parametrize("text", [
    'say "hi"', "back\\slash\\", "two\nlines\r\n", "tab\there", "\x00\x1b[31mred", "ünïcode ✓",
    '"', "\\", "\\\"", 'end with backslash \\', "\udcff lone surrogate", "",
])
def test_quoted_argument_is_exactly_one_token_for_asterisk(text):
    quoted = quote_argument(text)
    assert "\n" not in quoted and "\r" not in quoted
    assert asterisk_parse_args(f"VERBOSE {quoted} 1") == ["VERBOSE", sanitize_text(text), "1"]


def test_long_text_is_cut_so_the_line_fits_the_oldest_agi_buffer():
    agi, out = session(b"200 result=1\n")
    agi.verbose("é" * 5000)
    assert len(out.getvalue()) <= MAX_COMMAND_BYTES
    out.getvalue().decode("utf-8")  # never cut inside a character


def test_oversized_raw_command_is_refused_not_split():
    agi, out = session(b"")
    with pytest.raises(AGIProtocolError):
        agi.send_command("VERBOSE", '"' + "x" * 3000 + '"')
    assert out.getvalue() == b""


def test_hangup_line_is_a_notice_and_the_real_reply_follows():
    agi, _ = session(b"HANGUP\n200 result=1\n")
    agi.verbose("x")
    assert agi.hung_up


@pytest.fixture
def socket_session():
    opened = []

    def make(replies: bytes) -> AGISession:
        # As Asterisk: the environment first; the replies only once the session has read it
        # (data already waiting after the block is refused as the rest of a forged block).
        ours, theirs = socket.socketpair()
        theirs.sendall(ENV)
        files = [ours.makefile("rb", buffering=0), ours.makefile("wb", buffering=0)]
        opened.extend([ours, theirs, *files])
        agi = AGISession(*files)
        theirs.sendall(replies)
        return agi

    yield make
    for item in opened:
        item.close()


def test_minus_one_followed_by_hangup_notice_raises_hangup(socket_session):
    agi = socket_session(b"200 result=-1 endpos=1234\nHANGUP\n")
    with pytest.raises(AGIHangup):
        agi.execute("STREAM FILE", '"x"', '""')


def test_minus_one_on_a_live_channel_is_an_application_error(socket_session):
    agi = socket_session(b"200 result=-1 endpos=0\n")
    with pytest.raises(pyst2.AGIAppError) as info:
        agi.execute("STREAM FILE", '"missing"', '""')
    assert not isinstance(info.value, AGIHangup)


def test_511_dead_channel_is_a_hangup():
    agi, _ = session(b"511 Command Not Permitted on a dead channel or intercept routine\n")
    with pytest.raises(AGIDeadChannel):
        agi.execute("STREAM FILE", '"x"', '""')
    assert agi.hung_up
    assert issubclass(AGIDeadChannel, pyst2.AGIHangup)  # pyst2 callers catch it too


def test_520_multiline_usage_is_read_to_its_end():
    reply = (b"520-Invalid command syntax.  Proper usage follows:\n"
             b"Usage: SET VARIABLE <variablename> <value>\n<literal>x</literal>\n\n"
             b"520 End of proper usage.\n200 result=1\n")
    agi, _ = session(reply)
    with pytest.raises(AGIUsageError) as info:
        agi.execute("SET VARIABLE", "x")
    assert "Usage: SET VARIABLE" in info.value.usage
    agi.verbose("stream still in step")


def test_520_without_usage_text():
    agi, _ = session(b"520 Invalid command syntax.  Proper usage not available.\n")
    with pytest.raises(AGIUsageError):
        agi.execute("FOO")


def test_510_invalid_command():
    agi, _ = session(b"510 Invalid or unknown command\n")
    with pytest.raises(AGIInvalidCommand):
        agi.execute("FOO")


def test_100_trying_is_followed_by_the_final_reply():
    agi, _ = session(b"100 result=0 Trying...\n200 result=0 Gosub complete\n")
    response = agi.execute("GOSUB", "ctx", "s", "1")
    assert response.result == "0" and response["text"] == ("Gosub complete", "")


def test_empty_result_and_timeout_marker():
    agi, _ = session(b"200 result= (timeout)\n")
    response = agi.execute("GET DATA", '"beep"', "100", "4")
    assert response.result == "" and response.data == "timeout"


def test_data_with_parentheses_and_endpos():
    agi, _ = session(b"200 result=1 (a (b) c) endpos=42\n")
    response = agi.execute("RECORD FILE", "x")
    assert response.data == "a (b) c" and response["endpos"] == ("42", "")


def test_variable_distinguishes_unset_from_empty():
    agi, _ = session(b"200 result=0\n200 result=1 ()\n")
    assert agi.variable("UNSET") is None
    assert agi.variable("EMPTY") == ""


def test_eof_mid_reply_is_connection_closed():
    agi, _ = session(b"200 result=1")  # would parse as a whole reply if the cut went unnoticed
    with pytest.raises(AGIConnectionClosed):
        agi.verbose("x")
    assert agi.hung_up
    agi, _ = session(b"")
    with pytest.raises(AGIConnectionClosed):
        agi.verbose("x")


def test_malformed_line_is_a_protocol_error():
    agi, _ = session(b"hello asterisk\n")
    with pytest.raises(AGIProtocolError):
        agi.verbose("x")


def test_eof_before_environment():
    with pytest.raises(AGIConnectionClosed):
        AGISession(io.BytesIO(b""), io.BytesIO())


def test_session_works_in_a_worker_thread_over_a_socket():
    """pyst2's own AGI() fails off the main thread (signal.signal); ours must not."""
    ours, theirs = socket.socketpair()
    result = {}

    def worker():
        with ours.makefile("rb", buffering=0) as reader, ours.makefile("wb", buffering=0) as writer:
            agi = AGISession(reader, writer)
            agi.set_variable("X", "1")
            result["hung_up"] = agi.poll_hangup()
            result["installed"] = agi.install_sighup_handler()

    theirs.sendall(ENV)
    thread = threading.Thread(target=worker)
    thread.start()
    theirs.settimeout(5)
    command = theirs.recv(100)  # as Asterisk: the reply once the command has come
    theirs.sendall(b"200 result=1\nHANGUP\n")
    thread.join(5)
    assert result == {"hung_up": True, "installed": False}
    assert command == b'SET VARIABLE "X" "1"\n'
    ours.close()
    theirs.close()
