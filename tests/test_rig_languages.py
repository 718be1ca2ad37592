"""German and Spanish calls to 8008 on the real Asterisk: the route's language (VA_LANGUAGE, i.e.
CHANNEL(language)) picks the prompts Asterisk plays and the language of every provider request."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.emulators.openai_api import tone_for
from harness.helpers import rig_conf
from harness.rig.asterisk import SHARED, SRC_IN_CHROOT
from harness.rig.calls import make_question, place_call, sound_heard, tone_seconds
from harness.rig.main_job import LOCAL_PORT
from harness.servers import FastAGIProcess
from tests.test_languages import LANGUAGES, languages_conf
from tests.test_rig_calls import db_rows

SOUNDS = Path(__file__).resolve().parents[1] / "sounds"
GERMAN_QUESTION = "Wann haben Sie unter der Woche geöffnet?"
SPANISH_QUESTION = "¿A qué hora abren entre semana?"


def prompt_played(heard: Path, name: str, language: str) -> None:
    """The caller heard ``name`` in ``language``, and not the English one."""
    assert sound_heard(heard, SOUNDS / language / f"{name}.ulaw") > 0.9, (name, language)
    assert sound_heard(heard, SOUNDS / f"{name}.ulaw") < 0.6, (name, "English")


def system_prompts(emulators) -> list[str]:
    return [r.json()["systemInstruction"]["parts"][0]["text"] for r in emulators["gemini"].requests
            if "systemInstruction" in r.json()]


def test_a_german_call_by_process_agi_hears_german_prompts_and_asks_every_provider_in_german(
        rig, rig_config, emulators):
    rig_config(languages_conf(Path(SRC_IN_CHROOT) / "voiceassist" / "templates"))  # as the chroot sees them
    question = make_question("de-weekdays", GERMAN_QUESTION, 3700, voice="de")
    emulators["speech"].transcripts = {3700: GERMAN_QUESTION}
    call = place_call(rig, "6101", [question], context="voiceassist", language="de")
    call.wait()
    _, turns = db_rows("6101")
    assert turns[0]["status"] == "ok", turns[0]["error"]
    assert turns[0]["transcript"] == GERMAN_QUESTION
    assert (turns[0]["stt_provider"], turns[0]["tts_provider"]) == ("google_speech", "google_tts")  # [tts.de-DE]
    assert emulators["speech"].requests[-1].json()["config"]["languageCode"] == "de-DE"
    sent = system_prompts(emulators)[-1]
    assert "Always answer in German" in sent and "Montag bis Freitag" in sent  # [general.de-DE] knowledge_file
    voice = emulators["google_tts"].requests[-1].json()["voice"]
    assert (voice["languageCode"], voice["name"]) == ("de-DE", "de-DE-Chirp3-HD-Kore")
    assert tone_seconds(call.heard_path, tone_for(turns[0]["reply"])) >= 1.0  # the answer was heard
    prompt_played(call.heard_path, "greeting", "de")
    prompt_played(call.heard_path, "anything-else", "de")


@pytest.fixture
def language_server(rig, emulators):
    conf = SHARED / "languages.conf"
    conf.write_text(rig_conf(emulators, LANGUAGES))
    server = FastAGIProcess(conf, port=LOCAL_PORT)
    yield server
    server.stop()


def test_a_spanish_call_by_fastagi_hears_spanish_prompts_and_asks_every_provider_in_spanish(
        rig, language_server, emulators):
    question = make_question("es-weekdays", SPANISH_QUESTION, 3900, voice="es")
    emulators["speech"].transcripts = {3900: SPANISH_QUESTION}
    # A silent first turn: the caller hears "I didn't catch that" in Spanish, then asks.
    call = place_call(rig, "6102", ["silence", question], context="va-local", language="es")
    call.wait()
    _, turns = db_rows("6102")
    assert [t["status"] for t in turns][:2] == ["no_speech", "ok"], [t["error"] for t in turns]
    assert turns[1]["transcript"] == SPANISH_QUESTION and turns[1]["tts_provider"] == "openai_tts"
    assert emulators["speech"].requests[-1].json()["config"]["languageCode"] == "es-ES"
    sent = system_prompts(emulators)[-1]
    assert "Always answer in Spanish" in sent and "De lunes a viernes" in sent
    assert 'do not guess: say "No lo sé; ¿le tomo un mensaje?"' in sent  # [llm.es-ES] unknown_answer
    assert tone_seconds(call.heard_path, tone_for(turns[1]["reply"])) >= 1.0
    for name in ("greeting", "didnt-catch", "anything-else"):
        prompt_played(call.heard_path, name, "es")


def test_an_english_call_on_the_same_server_stays_english(rig, language_server, emulators):
    question = make_question("hours", "What are your opening hours?", 2200)
    emulators["speech"].transcripts = {2200: "What are your opening hours?"}
    call = place_call(rig, "6103", [question], context="va-local")
    call.wait()
    _, turns = db_rows("6103")
    assert turns[0]["status"] == "ok", turns[0]["error"]
    assert emulators["speech"].requests[-1].json()["config"]["languageCode"] == "en-US"
    assert "Always answer in" not in system_prompts(emulators)[-1]
    prompt_played_english = sound_heard(call.heard_path, SOUNDS / "greeting.ulaw")
    assert prompt_played_english > 0.9 and sound_heard(call.heard_path, SOUNDS / "de" / "greeting.ulaw") < 0.6


def test_a_caller_speaking_german_on_an_english_route_is_answered_in_german_from_the_first_question(
        rig, rig_config, emulators):
    rig_config(languages_conf(Path(SRC_IN_CHROOT) / "voiceassist" / "templates") + "[general]\ndetect_language = yes\n")
    office = make_question("de-office", "Wo ist Ihr Büro?", 3550, voice="de")
    weekdays = make_question("de-weekdays", GERMAN_QUESTION, 3700, voice="de")
    emulators["speech"].transcripts = {3550: "Wo ist Ihr Büro?", 3700: GERMAN_QUESTION}
    emulators["speech"].languages = {3550: "de-DE", 3700: "de-DE"}
    call = place_call(rig, "6104", [office, weekdays], context="voiceassist")  # the route sets no language
    call.wait()
    _, turns = db_rows("6104")
    assert [(t["status"], t["language"]) for t in turns][:2] == [("ok", "de-DE"), ("ok", "de-DE")], turns
    first, second = (r.json()["config"] for r in emulators["speech"].requests[-2:])
    # The first question is offered every configured language; the second is asked in German.
    assert (first["languageCode"], first["alternativeLanguageCodes"]) == ("en-US", ["de-DE", "es-ES"])
    assert second["languageCode"] == "de-DE" and "alternativeLanguageCodes" not in second
    assert all("Always answer in German" in sent for sent in system_prompts(emulators)[-2:])
    assert turns[0]["tts_provider"] == turns[1]["tts_provider"] == "google_tts"  # [tts.de-DE]
    # The greeting was English (nothing was known yet); after the first answer, German prompts.
    assert sound_heard(call.heard_path, SOUNDS / "greeting.ulaw") > 0.9
    prompt_played(call.heard_path, "anything-else", "de")
