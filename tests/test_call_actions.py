"""Call actions without Asterisk: what the configuration allows, the caller's plain requests
recognised by rules, the model's function calls (the real google-genai SDK against the Gemini
emulator's functionCall parts), and what a turn tells the dialplan (a byte-level fake Asterisk
talking to the FastAGI server)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
from harness.helpers import config_for, voiceassist_log
from harness.servers import in_process_fastagi
from voiceassist import providers
from voiceassist.call.actions import ActionKind, decide, match_intent, tools_for
from voiceassist.call.assistant import Assistant
from voiceassist.config import load_config
from voiceassist.errors import ConfigError
from voiceassist.providers.base import ToolCallingChatModel
from voiceassist.types import Conversation, ToolCall

DESTINATIONS = """
[destinations]
reception = from-internal,200,1 | The front desk: anything the assistant cannot answer
sales = ext-queues,400,1 | The sales team: quotes and new orders
[actions]
operator = reception
"""


def config(tmp_path, emulators=None, extra: str = ""):
    if emulators is not None:
        return config_for(emulators, tmp_path, extra=DESTINATIONS + extra)
    path = tmp_path / "voiceassist.conf"
    path.write_text(DESTINATIONS + extra)
    return load_config(path, environ={})


# -- what the configuration allows -------------------------------------------------------------------
def test_destinations_are_read_with_their_targets_and_descriptions(tmp_path):
    entries = config(tmp_path).destinations.entries
    assert [(e.name, e.target, e.description) for e in entries] == [
        ("reception", "from-internal,200,1", "The front desk: anything the assistant cannot answer"),
        ("sales", "ext-queues,400,1", "The sales team: quotes and new orders")]


@pytest.mark.parametrize("line", ["evil = from-internal,200,1)&System(rm -rf /) | x",
                                  "evil = Local/200@from-internal | x", "evil = 200 | x", "9lives = a,b,1 | x"])
def test_a_destination_that_is_not_a_plain_dialplan_target_is_refused(tmp_path, line):
    path = tmp_path / "voiceassist.conf"
    path.write_text(f"[destinations]\n{line}\n")
    with pytest.raises(ConfigError, match=r"\[destinations\]"):
        load_config(path, environ={})


def test_an_operator_that_is_not_a_listed_destination_is_refused(tmp_path):
    path = tmp_path / "voiceassist.conf"
    path.write_text("[destinations]\nsales = from-internal,201,1\n[actions]\noperator = boss\n")
    with pytest.raises(ConfigError, match=r"\[actions\] operator = boss .* not in \[destinations\] \(listed: sales\)"):
        load_config(path, environ={})


def test_the_model_is_offered_only_the_actions_the_configuration_allows(tmp_path):
    names = {tool.name for tool in tools_for(config(tmp_path))}
    assert names == {"transfer", "end_call"}
    transfer = next(t for t in tools_for(config(tmp_path)) if t.name == "transfer")
    assert transfer.parameters["properties"]["destination"]["enum"] == ["reception", "sales"]
    assert "The sales team" in transfer.description
    path = tmp_path / "bare.conf"
    path.write_text("[actions]\nend_call = no\n")
    assert tools_for(load_config(path, environ={})) == ()
    assert {t.name for t in tools_for(config(tmp_path, extra="take_message = voicemail\n"))} == {
        "transfer", "end_call", "take_message"}


# -- deciding ----------------------------------------------------------------------------------------
def test_a_listed_destination_is_transferred_to_with_its_configured_target(tmp_path):
    decision = decide(config(tmp_path), ToolCall("transfer", {"destination": "sales"}))
    assert decision.action.kind is ActionKind.TRANSFER
    assert (decision.action.target, decision.action.name) == ("ext-queues,400,1", "sales")
    assert decision.say == "Transferring you to sales."


@pytest.mark.parametrize("arguments", [{"destination": "+1 900 555 0100"}, {"destination": "from-internal,999,1"},
                                       {"destination": ["sales"]}, {}, {"number": "200"}])
def test_anything_but_a_listed_name_is_refused_logged_and_explained(tmp_path, arguments):
    with voiceassist_log() as log:
        decision = decide(config(tmp_path), ToolCall("transfer", arguments))
    assert decision.action.kind is ActionKind.REFUSED and decision.action.target == ""
    assert decision.say == "Sorry, I can't do that. I can transfer you to reception or sales."
    assert "[ACTION] refused transfer(" in log()


def test_a_tool_the_configuration_does_not_offer_is_refused(tmp_path):
    decision = decide(config(tmp_path), ToolCall("take_message", {}))
    assert decision.action.kind is ActionKind.REFUSED
    decision = decide(config(tmp_path), ToolCall("run_shell", {"command": "id"}))
    assert decision.action.kind is ActionKind.REFUSED


def test_the_model_may_choose_a_short_farewell_but_not_a_speech(tmp_path):
    assert decide(config(tmp_path), ToolCall("end_call", {"farewell": "Bye, Sam!"})).say == "Bye, Sam!"
    assert decide(config(tmp_path), ToolCall("end_call", {"farewell": "x" * 500})).say == \
        "Thank you for calling. Goodbye."


# -- the caller's plain requests ------------------------------------------------------------------------
@pytest.mark.parametrize("said, expected", [
    ("Can I speak to someone, please?", ToolCall("transfer", {"destination": "reception"})),
    ("Operator.", ToolCall("transfer", {"destination": "reception"})),
    ("I'd like to talk to a real person", ToolCall("transfer", {"destination": "reception"})),
    ("Could you put me through to sales?", ToolCall("transfer", {"destination": "sales"})),
    ("Please dial 1 900 555 0100", ToolCall("transfer", {"destination": "1 900 555 0100"})),
    ("No thanks, that's all. Goodbye!", ToolCall("end_call", {})),
    ("What are your opening hours?", None),
    ("Do you sell to someone who lives abroad?", None),   # "someone", but not asking for one
    ("How much are your sales prices?", None),            # a destination's name, but not asking for it
])
def test_plain_requests_are_recognised_without_a_model(tmp_path, said, expected):
    assert match_intent(config(tmp_path), said) == expected


def test_a_number_the_caller_asks_for_is_refused(tmp_path):
    cfg = config(tmp_path)
    decision = decide(cfg, match_intent(cfg, "Transfer me to 555-0199 right now"))
    assert decision.action.kind is ActionKind.REFUSED


def test_leaving_a_message_is_recognised_only_when_messages_are_taken(tmp_path):
    assert match_intent(config(tmp_path), "Can I leave a message?") is None
    assert match_intent(config(tmp_path, extra="take_message = record\n"), "Can I leave a message?") == \
        ToolCall("take_message", {})


# -- Gemini function calling with the real SDK ---------------------------------------------------------
def test_gemini_is_offered_the_actions_as_function_declarations_and_its_call_becomes_a_tool_call(
        emulators, tmp_path):
    cfg = config(tmp_path, emulators)
    gemini = providers.create_named("llm", "gemini", cfg)
    assert isinstance(gemini, ToolCallingChatModel)
    emulators["gemini"].reply = lambda body: ToolCall("transfer", {"destination": "sales"})
    pieces = list(gemini.act(Conversation("system", (), "I want a quote", tools_for(cfg))))
    assert pieces == [ToolCall("transfer", {"destination": "sales"})]
    body = json.loads(emulators["gemini"].requests[-1].body)
    declarations = body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["transfer", "end_call"]
    # the SDK sends the schema as parameters_json_schema (proto JSON accepts either spelling)
    schema = declarations[0].get("parametersJsonSchema") or declarations[0]["parameters_json_schema"]
    assert schema["properties"]["destination"]["enum"] == ["reception", "sales"]


def test_gemini_text_replies_still_stream_when_tools_are_offered(emulators, tmp_path):
    cfg = config(tmp_path, emulators)
    gemini = providers.create_named("llm", "gemini", cfg)
    emulators["gemini"].reply = lambda body: "We open at eight."
    assert "".join(gemini.act(Conversation("system", (), "When?", tools_for(cfg)))) == "We open at eight."


# -- a turn tells the dialplan -------------------------------------------------------------------------
@pytest.fixture
def server(emulators, tmp_path, request):
    extra = DESTINATIONS + "fallback = reception\n" + getattr(request, "param", "")
    with in_process_fastagi(Assistant(config_for(emulators, tmp_path, extra=extra))) as instance:
        yield instance


def run_turn(server, tmp_path, uniqueid="1700000000.7"):
    wav = call_recording(tmp_path / "spool/voiceassist", uniqueid)
    client = FakeAsterisk(server.server_address[1], fastagi_env(
        "voiceassist", uniqueid, ["turn", str(wav), "NOISE", "1", str(int(time.time())), "8008", uniqueid]))
    client.run()
    return client.variables()


def stored_turn(tmp_path):
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM voiceassist_turns ORDER BY id DESC LIMIT 1").fetchone())


def test_the_model_transferring_sends_the_call_to_the_dialplan_target_and_stores_it(server, emulators, tmp_path):
    emulators["speech"].default_transcript = "I would like a quote for a new boiler."
    emulators["gemini"].reply = lambda body: ToolCall("transfer", {"destination": "sales"})
    variables = run_turn(server, tmp_path)
    assert variables["VA_ACTION"] == "transfer" and variables["VA_TARGET"] == "ext-queues,400,1"
    assert variables["VA_TARGET_NAME"] == "sales" and variables["VA_FALLBACK"] == "from-internal,200,1"
    assert variables["VA_CONTINUE"] == "0" and variables["VA_RING_S"] == "30"
    assert variables["VOICEASSIST_REPLY"] == "Transferring you to sales."
    turn = stored_turn(tmp_path)
    assert (turn["action"], turn["action_target"]) == ("transfer", "sales (ext-queues,400,1)")
    assert turn["status"] == "ok" and turn["llm_provider"] == "gemini"


def test_asking_for_someone_transfers_without_asking_the_model(server, emulators, tmp_path):
    emulators["speech"].default_transcript = "Can I speak to someone please?"
    before = len(emulators["gemini"].requests)
    variables = run_turn(server, tmp_path)
    assert variables["VA_ACTION"] == "transfer" and variables["VA_TARGET"] == "from-internal,200,1"
    # the fallback is where this transfer goes already: the dialplan does not ring it twice
    assert variables["VA_FALLBACK"] == variables["VA_TARGET"]
    assert len(emulators["gemini"].requests) == before
    assert stored_turn(tmp_path)["llm_provider"] == "rules"


def test_a_number_from_the_model_is_refused_and_the_conversation_goes_on(server, emulators, tmp_path):
    emulators["gemini"].reply = lambda body: ToolCall("transfer", {"destination": "+1 900 555 0100"})
    variables = run_turn(server, tmp_path)
    assert variables["VA_ACTION"] == "" and variables["VA_CONTINUE"] == "1"
    assert variables["VOICEASSIST_REPLY"] == "Sorry, I can't do that. I can transfer you to reception or sales."
    turn = stored_turn(tmp_path)
    assert turn["action"] == "refused" and "900 555 0100" in turn["action_target"]


@pytest.mark.parametrize("server", ["[general]\nplayback = file\n"], indirect=True)
def test_the_model_ending_the_call_says_its_farewell_in_file_mode_too(server, emulators, tmp_path):
    emulators["gemini"].reply = lambda body: ToolCall("end_call", {"farewell": "Goodbye, and thanks for calling."})
    variables = run_turn(server, tmp_path)
    assert variables["VA_ACTION"] == "end_call" and variables["VA_CONTINUE"] == "0"
    assert variables["VA_ANSWER"].endswith("answer-1")
    assert variables["VOICEASSIST_REPLY"] == "Goodbye, and thanks for calling."
    assert stored_turn(tmp_path)["action"] == "end_call"
