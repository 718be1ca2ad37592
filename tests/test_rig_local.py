"""The local stack (no cloud, no emulator) answers a call to 8008 on the real Asterisk."""

from __future__ import annotations

import pytest

from harness.rig.asterisk import SHARED
from harness.rig.calls import make_question, place_call
from harness.rig.main_job import LOCAL_PORT, SAMPLE_ANSWER, SAMPLE_QUESTION, main_job_conf
from harness.servers import FastAGIProcess
from tests.test_rig_calls import db_rows


@pytest.fixture
def local_server(rig):
    conf = SHARED / "local.conf"
    conf.write_text(main_job_conf() + "\n[stt]\nprovider = pocketsphinx\n[llm]\nprovider = llama_cpp\n"
                                      "[tts]\nprovider = piper\n[general]\nmax_turns = 3\n")
    server = FastAGIProcess(conf, port=LOCAL_PORT)
    yield server
    server.stop()


def test_local_stack_answers_a_call_end_to_end(rig, local_server):
    question = make_question("local-hours", "What are your opening hours?", 2200)
    call = place_call(rig, "6001", [question], context="va-local")
    call.wait(timeout=180)
    row, turns = db_rows("6001")
    assert turns[0]["status"] == "ok", turns[0]["error"]
    assert (turns[0]["stt_provider"], turns[0]["llm_provider"], turns[0]["tts_provider"]) == ("pocketsphinx", "llama_cpp", "piper")
    assert turns[0]["transcript"] == "what are your opening hours"
    assert turns[0]["reply"]
    assert rig.wait_for_log(r"<Local/6001@va-test-entry-[0-9a-f]+;2> Playing '[^']*answer-1(-part1)?\.ulaw'")


@pytest.fixture
def default_offline_server(rig):
    """The embedded defaults with the sample knowledge file: what a new user's first call meets."""
    conf = SHARED / "offline-default.conf"
    conf.write_text(main_job_conf() + "\n[general]\nmax_turns = 2\n")
    server = FastAGIProcess(conf, port=LOCAL_PORT)
    yield server
    server.stop()


def test_the_offline_default_answers_a_paraphrase_from_the_knowledge_file_and_an_uncovered_question_honestly(
        rig, default_offline_server):
    questions = [make_question("offline-weekdays", SAMPLE_QUESTION, 2300),
                 make_question("offline-france", "What is the capital of France?", 2400)]
    call = place_call(rig, "6011", questions, context="va-local")
    call.wait(timeout=240)
    _, turns = db_rows("6011")
    assert [t["status"] for t in turns] == ["ok", "ok"], [t["error"] for t in turns]
    assert {(t["stt_provider"], t["llm_provider"], t["tts_provider"]) for t in turns} == {("moonshine", "knowledge", "piper")}
    assert {"open", "week"} <= set(turns[0]["transcript"].lower().replace("?", "").split())
    assert turns[0]["reply"].startswith(SAMPLE_ANSWER)  # "What are your opening hours?", found by meaning
    assert {"capital", "france"} <= set(turns[1]["transcript"].lower().replace("?", "").split())
    assert turns[1]["reply"].startswith("I'm sorry, I don't know that.")  # [llm] unknown_answer, not an invention
    for turn in (1, 2):
        assert rig.wait_for_log(rf"<Local/6011@va-test-entry-[0-9a-f]+;2> Playing '[^']*answer-{turn}(-part1)?\.ulaw'")
