"""The AGI session against hostile bytes: caller IDs with line breaks, forged environment blocks,
text that only fits once escaped, file names with spaces (Asterisk's tokenizer decides)."""

from __future__ import annotations

import io
import socket

import pytest

from harness.fake_asterisk import asterisk_parse_args
from tests.test_agi_session import ENV
from voiceassist.asterisk.agi import MAX_ARGUMENT_BYTES, MAX_COMMAND_BYTES, AGISession, quote_argument, quote_path
from voiceassist.errors import AGIConnectionClosed, AGIEnvironmentRefused, AGIProtocolError


def session(replies: bytes = b"", env: bytes = ENV) -> tuple[AGISession, io.BytesIO]:
    out = io.BytesIO()
    return AGISession(io.BytesIO(env + replies), out), out


# -- the 2047-byte command limit, after escaping ----------------------------------------------
@pytest.mark.parametrize("text", ['"' * 5000, "\\" * 5000, '\\"' * 3000, 'é"' * 2000, "a" * 1797 + '"'],
                         ids=["quotes", "backslashes", "escaped quotes", "accents and quotes", "quote at the cut"])
def test_verbose_full_of_quotes_or_backslashes_is_cut_to_fit_not_refused(text):
    agi, out = session(b"200 result=1\n")
    agi.verbose(text)  # would raise AGIProtocolError if the cut were made before escaping
    line = out.getvalue()
    assert len(line) <= MAX_COMMAND_BYTES and line.endswith(b"\n")
    words = asterisk_parse_args(line.decode("utf-8").rstrip("\n"))
    assert words[0] == "VERBOSE" and words[2] == "1" and len(words) == 3  # the text is still one word
    assert text.startswith(words[1]) and len(words[1]) > 500


def test_set_variable_value_of_quotes_fits_the_oldest_agi_buffer():
    agi, out = session(b"200 result=1\n")
    agi.set_variable("VOICEASSIST_REPLY", 'He said "no" \\ ' * 400)
    line = out.getvalue()
    assert len(line) <= MAX_COMMAND_BYTES
    name, value = asterisk_parse_args(line.decode().rstrip("\n"))[2:]
    assert name == "VOICEASSIST_REPLY" and ('He said "no" \\ ' * 400).startswith(value)


def test_quoted_argument_never_ends_in_half_an_escape():
    quoted = quote_argument("a" * (MAX_ARGUMENT_BYTES - 3) + "\\", MAX_ARGUMENT_BYTES)
    assert len(quoted.encode()) <= MAX_ARGUMENT_BYTES
    assert asterisk_parse_args(f"VERBOSE {quoted} 1") == ["VERBOSE", "a" * (MAX_ARGUMENT_BYTES - 3), "1"]


# -- file names are quoted (a space must not split the command) --------------------------------
def test_stream_file_with_a_space_in_the_path_is_one_argument_for_asterisk():
    agi, out = session(b"200 result=0 endpos=8000\n")
    agi.stream_file("/var/spool/asterisk/voice assist/1700000000.1/answer-1-part1")
    words = asterisk_parse_args(out.getvalue().decode().rstrip("\n"))
    assert words == ["STREAM", "FILE", "/var/spool/asterisk/voice assist/1700000000.1/answer-1-part1", "", "0"]


@pytest.mark.parametrize("call", [
    lambda agi, name: agi.get_option(name, "#", 100),
    lambda agi, name: agi.get_data(name, 100, 4),
    lambda agi, name: agi.send_image(name),
], ids=["GET OPTION", "GET DATA", "SEND IMAGE"])
def test_every_command_naming_a_file_quotes_it(call):
    agi, out = session(b"200 result=0\n")
    call(agi, 'dir with space/"odd" \\name')
    words = asterisk_parse_args(out.getvalue().decode().rstrip("\n"))
    assert 'dir with space/"odd" \\name' in words


@pytest.mark.parametrize("name", ["/tmp/a\nVERBOSE x", "/tmp/\x00nul", "/tmp/" + "x" * 3000])
def test_a_file_name_that_cannot_be_sent_intact_is_refused_not_altered(name):
    agi, out = session(b"200 result=0 endpos=0\n")
    with pytest.raises(AGIProtocolError):
        agi.stream_file(name)
    assert out.getvalue() == b""
    with pytest.raises(AGIProtocolError):
        quote_path(name)


# -- the environment block: a key only where Asterisk's order puts it ------------------------
@pytest.mark.parametrize("field", [b"agi_calleridname: ", b"agi_callerid: "])
@pytest.mark.parametrize("injected", [
    b"\nagi_uniqueid: 1.1",
    b"\nagi_channel: PJSIP/victim-00000001",
    b"\nagi_request: agi://127.0.0.1/other\nagi_arg_1: hangup",
    b"\nagi_network_script: voiceassist?secret=guess",
    b"\n\nagi_uniqueid: 1.1\n",
])
def test_a_caller_id_with_line_breaks_overrides_no_key(field, injected):
    line = ENV[ENV.index(field):ENV.index(b"\n", ENV.index(field)) + 1]
    env = ENV.replace(line, line[:-1] + injected + b"\n")
    agi, _ = session(b"200 result=1\n", env)
    assert agi.env["agi_uniqueid"] == "1717171717.42"
    assert agi.env["agi_channel"] == "PJSIP/1001-00000007"
    assert agi.env["agi_request"] == "voiceassist"
    assert "agi_network_script" not in agi.env
    assert agi.arguments() == ["turn", ""]
    key = field.decode().rstrip(": ")
    assert agi.env[key] == (line[len(field):-1] + injected).decode()  # all of it, in the caller ID
    agi.verbose("still in step")  # the next read is the real reply, not a leftover line


def test_a_key_out_of_order_is_part_of_the_previous_value():
    env = ENV.replace(b"agi_dnid: 8008\n", b"agi_dnid: 8008\nagi_extension: evil\nagi_rdnis: x\n", 1)
    agi, _ = session(b"", env)
    # agi_rdnis is next in the order, agi_extension is not: it belongs to agi_dnid's value.
    assert agi.env["agi_dnid"] == "8008\nagi_extension: evil"
    assert agi.env["agi_extension"] == "s"


@pytest.mark.parametrize("value", [b"turn\nmore", b"turn\n\nagi_arg_2: x"], ids=["continued", "blank line"])
def test_a_line_break_in_an_argument_is_refused(value):
    env = ENV.replace(b"agi_arg_1: turn\n", b"agi_arg_1: " + value + b"\n")
    with pytest.raises(AGIEnvironmentRefused):
        socket_session(env)


def test_a_line_break_in_the_uniqueid_or_channel_is_refused():
    for old, new in ((b"agi_channel: PJSIP/1001-00000007\n", b"agi_channel: PJSIP/1001\n-00000007\n"),
                     (b"agi_uniqueid: 1717171717.42\n", b"agi_uniqueid: 1717171717.42\nx\n")):
        with pytest.raises(AGIEnvironmentRefused, match="line break"):
            session(b"", ENV.replace(old, new))


def test_a_refused_url_is_named_not_shown_it_may_carry_the_secret():
    env = b"agi_network: yes\nagi_network_script: voiceassist?secret=hunter2\nx\n" + ENV
    with pytest.raises(AGIEnvironmentRefused) as refused:
        session(b"", env)
    assert "agi_network_script" in str(refused.value) and "hunter2" not in str(refused.value)


def test_a_blank_line_ends_the_block_only_after_agi_threadid():
    env = ENV.replace(b"agi_calleridname: Alice\n", b"agi_calleridname: Alice\n\n\n")
    agi, _ = session(b"", env)
    assert agi.env["agi_calleridname"] == "Alice\n\n"
    assert agi.env["agi_threadid"] == "140226405308096" and agi.arguments() == ["turn", ""]


def test_a_block_cut_off_before_its_end_is_not_an_environment():
    with pytest.raises(AGIConnectionClosed, match="inside"):
        session(b"", ENV[:ENV.index(b"agi_threadid")])


def test_a_first_line_that_is_not_asterisks_is_refused_at_once():
    with pytest.raises(AGIProtocolError, match="not an AGI environment line"):
        session(b"", b"agi_uniqueid: 1.1\n" + ENV)


# -- a complete forged block in the caller ID: the real rest of the block is already waiting --
FORGED_NAME = (b"Mallory\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\n"
               b"agi_dnid: 8008\nagi_rdnis: unknown\nagi_context: x\nagi_extension: s\nagi_priority: 1\n"
               b"agi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 1\nagi_arg_1: hangup\nagi_arg_2: recording\n"
               b"agi_arg_3: /etc/passwd.wav\n\n")


def socket_session(data: bytes) -> AGISession:
    """A session over a socket (as FastAGI reads it: unbuffered), all of ``data`` already sent."""
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(data)
        with ours.makefile("rb", buffering=0) as reader, ours.makefile("wb", buffering=0) as writer:
            return AGISession(reader, writer)
    finally:
        ours.close()
        theirs.close()


def test_a_forged_complete_block_in_the_caller_name_is_refused():
    env = ENV.replace(b"agi_calleridname: Alice\n", b"agi_calleridname: " + FORGED_NAME)
    with pytest.raises(AGIEnvironmentRefused, match="data right after the AGI environment"):
        socket_session(env)


def test_a_hangup_notice_right_after_the_block_is_not_forgery():
    agi = socket_session(ENV + b"HANGUP\n")
    assert agi.hung_up and agi.env["agi_uniqueid"] == "1717171717.42"


def test_a_genuine_block_with_nothing_waiting_is_accepted():
    agi = socket_session(ENV)
    assert not agi.hung_up and agi.arguments() == ["turn", ""]


def test_process_agi_refuses_a_forged_block_with_exit_status_1_and_logs_it(tmp_path):
    """Exit status 1 is AGISTATUS=FAILURE for Asterisk: the dialplan plays the apology."""
    import sys

    from harness.fake_asterisk import converse

    config = tmp_path / "voiceassist.conf"
    config.write_text(f"[logging]\nfile = {tmp_path}/voiceassist.log\n")
    env = ENV.replace(b"agi_calleridname: Alice\n", b"agi_calleridname: " + FORGED_NAME + b"Mallory\n")
    code, commands, stderr = converse([sys.executable, "-m", "voiceassist", "--config", str(config), "agi"], env)
    assert code == 1 and commands == []
    assert stderr.count("\n") == 1 and "forged environment block" in stderr and "Traceback" not in stderr
    assert "AGI environment refused: data right after the AGI environment" in (tmp_path / "voiceassist.log").read_text()
