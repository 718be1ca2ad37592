"""A call's language (its channel's, per route) picks the settings, providers, prompts and words of
that language; English stays the default and every other language is configured."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from harness.helpers import conf_text, talk
from voiceassist import providers
from voiceassist.admin.install import AsteriskPaths, Installer
from voiceassist.asterisk.dialplan import parse_request
from voiceassist.call.assistant import Assistant
from voiceassist.call.requests import channel_language
from voiceassist.config import load_config
from voiceassist.errors import ConfigError
from voiceassist.providers.espeak import voice_for
from voiceassist.text.knowledge import SAMPLE_KNOWLEDGE
from voiceassist.text.matching import KnowledgeIndex, concepts
from voiceassist.text.speakable import speakable

REPO = Path(__file__).resolve().parents[1]
GERMAN_KNOWLEDGE = SAMPLE_KNOWLEDGE.with_name("sample-knowledge.de.md")
SPANISH_KNOWLEDGE = SAMPLE_KNOWLEDGE.with_name("sample-knowledge.es.md")


def languages_conf(templates: Path = SAMPLE_KNOWLEDGE.parent) -> str:
    """German and Spanish besides English, with their own knowledge files (in ``templates``: the
    package's, or where a chroot sees them), German with Google's voice, Spanish with its own
    unknown answer."""
    return f"""
[general]
languages = de-DE, es-ES
knowledge_file = {templates / SAMPLE_KNOWLEDGE.name}

[general.de-DE]
knowledge_file = {templates / GERMAN_KNOWLEDGE.name}

[tts.de-DE]
provider = google_tts

[google_tts.de-DE]
voice = de-DE-Chirp3-HD-Kore

[general.es-ES]
knowledge_file = {templates / SPANISH_KNOWLEDGE.name}

[llm.es-ES]
unknown_answer = No lo sé; ¿le tomo un mensaje?
"""


LANGUAGES = languages_conf()


def full_config(emulators: dict, tmp_path: Path, extra: str = LANGUAGES):
    path = tmp_path / "voiceassist.conf"
    path.write_text(conf_text(emulators, data_dir=tmp_path, extra=extra))
    return providers.load_full_config(path, environ={})


@pytest.mark.parametrize("channel,served", [
    ("de", "de-DE"), ("de_DE", "de-DE"), ("de-AT", "de-DE"), ("es", "es-ES"), ("es_MX", "es-ES"),
    ("en", "en-US"), ("fr", "en-US"), ("", "en-US"), ("../../etc", "en-US"), ("de;rm -rf", "en-US"),
])
def test_the_channel_language_picks_a_configured_language_else_the_main_one(emulators, tmp_path, channel, served):
    config = full_config(emulators, tmp_path)
    assert config.language_for(channel) == served


def test_a_language_section_changes_only_that_languages_calls(emulators, tmp_path):
    config = full_config(emulators, tmp_path)
    german, spanish = config.for_language("de-DE"), config.for_language("es-ES")
    assert (german.general.language, german.general.knowledge_file) == ("de-DE", str(GERMAN_KNOWLEDGE))
    assert german.section("tts").get("provider") == "google_tts"
    assert german.sections["google_tts"]["voice"] == "de-DE-Chirp3-HD-Kore"
    assert spanish.llm.unknown_answer == "No lo sé; ¿le tomo un mensaje?"
    assert spanish.section("tts").get("provider") == "auto" and spanish.sections["google_tts"]["voice"] == ""
    # The main language's settings are untouched.
    assert (config.general.language, config.general.knowledge_file) == ("en-US", str(SAMPLE_KNOWLEDGE))
    assert config.section("tts").get("provider") == "auto" and config.llm.unknown_answer.startswith("I'm sorry")


@pytest.mark.parametrize("section,problem", [
    ("[general.de-DE]\nmax_turns = 0\n", "[general.de-DE] max_turns = '0' (in"),
    ("[database.de-DE]\nurl = sqlite:////tmp/other.db\n", "[database.de-DE] (in"),
    ("[piper.de-DE]\nspeed = fast\n", "[piper.de-DE] speed = 'fast'"),
])
def test_a_bad_language_section_is_refused_when_the_config_is_loaded(emulators, tmp_path, section, problem):
    with pytest.raises(ConfigError) as refused:
        full_config(emulators, tmp_path, LANGUAGES + section)
    assert problem in str(refused.value)


def test_a_section_for_a_language_no_call_uses_is_reported(emulators, tmp_path):
    config = full_config(emulators, tmp_path, LANGUAGES + "[llm.fr-FR]\nsystem_prompt = Bonjour\n")
    assert any("fr-FR is not [general] language or in [general] languages" in w for w in config.warnings)


def test_each_language_has_its_own_providers_and_shares_the_database(emulators, tmp_path):
    assistant = Assistant(full_config(emulators, tmp_path))
    german, spanish = assistant.in_language("de"), assistant.in_language("es_ES")
    assert assistant.in_language("en") is assistant and assistant.in_language("de_DE") is german
    assert german.providers("tts").names == ["google_tts"] and spanish.providers("tts").names == ["openai_tts"]
    assert german.providers("stt").provider("google_speech").language == "de-DE"
    assert spanish.providers("stt").provider("google_speech").language == "es-ES"
    assert german.journal() is assistant.journal() is spanish.journal()
    assert german.prepare() == [] and assistant.languages() == [assistant, german, spanish]


def test_offline_there_is_no_recogniser_for_german_and_the_error_says_what_to_set(tmp_path):
    path = tmp_path / "voiceassist.conf"
    path.write_text("[general]\nlanguage = de-DE\n")
    config = providers.load_full_config(path, environ={})
    with pytest.raises(ConfigError, match=r"no offline recogniser hears de-DE calls .*\[google_speech\] credentials_file"):
        Assistant(config).check_providers()
    assert providers.resolve_all("tts", config) == ["espeak"]  # the bundled Piper voice speaks English


def test_the_knowledge_model_answers_german_and_spanish_paraphrases_and_says_it_does_not_know(emulators, tmp_path):
    config = full_config(emulators, tmp_path, LANGUAGES + "[llm]\nprovider = knowledge\n")
    german, spanish = config.for_language("de-DE"), config.for_language("es-ES")
    model = providers.create("llm", german)
    assert model.reply(talk(german, "Bis wann haben Sie unter der Woche offen?")).startswith("Montag bis Freitag")
    assert model.reply(talk(german, "Was kostet es, wenn Sie zu mir nach Hause kommen?")).startswith("Ein Hausbesuch kostet")
    assert model.reply(talk(german, "Wo finde ich Sie?")).startswith("Hauptstraße zwölf")
    assert model.reply(talk(german, "Meine Heizung ist kaputt, können Sie das reparieren?")).startswith("Ja, wir warten")
    # Not in the file: the German words for "I don't know", not the nearest entry.
    assert model.reply(talk(german, "Was ist die Hauptstadt von Frankreich?")).startswith("Das weiß ich leider nicht.")
    model = providers.create("llm", spanish)
    assert model.reply(talk(spanish, "¿A qué hora abren entre semana?")).startswith("De lunes a viernes")
    assert model.reply(talk(spanish, "¿Cuánto me cobran por venir a casa?")).startswith("Una visita cuesta")
    assert model.reply(talk(spanish, "donde estan ubicados")).startswith("Calle Mayor doce")  # no accents, as recognisers write
    assert model.reply(talk(spanish, "¿Cuál es la capital de Francia?")) == "No lo sé; ¿le tomo un mensaje?"


def test_german_and_spanish_words_fold_into_the_same_concepts():
    assert concepts("Was kostet das?", "de-DE") == concepts("Wie teuer ist der Preis?", "de-DE") == {"kosten"}
    assert "heizung" in concepts("Meine Therme ist kaputt", "de")
    assert concepts("¿Cuánto cuesta?", "es") == concepts("¿Cuál es el precio?", "es") == {"cuesta"}
    assert concepts("Öffnungszeiten", "de") == concepts("offen", "de") == {"geöffnet"}
    index = KnowledgeIndex([("¿Dónde está su oficina?", "Calle Mayor doce.")], "es")
    assert index.best("dónde queda la tienda", 0.5) is not None


def test_every_chat_model_is_told_the_calls_language_and_its_unknown_answer(emulators, tmp_path):
    config = full_config(emulators, tmp_path)
    german = config.for_language("de-DE")
    providers.create("llm", german).reply(talk(german, "Was ist die Hauptstadt von Frankreich?"))
    sent = emulators["gemini"].requests[-1].json()["systemInstruction"]["parts"][0]["text"]
    assert "The caller speaks German. Always answer in German" in sent
    assert 'do not guess: say "Das weiß ich leider nicht.' in sent and "Hauptstraße zwölf" in sent
    english = talk(config, "What is the capital of France?").system
    assert "Always answer in" not in english and "Twelve Main Street" in english


def test_a_link_in_a_reply_is_said_in_the_calls_language():
    assert speakable("Siehe https://example.com/preise", language="de-DE") == "Siehe der Link auf unserer Webseite."
    assert speakable("Vea www.example.es", language="es") == "Vea el enlace de nuestra página web."
    assert speakable("See https://example.com") == "See the link on our website."


@pytest.mark.parametrize("language,voice", [("en-US", "en-us"), ("de-DE", "de"), ("es-ES", "es"), ("es-419", "es-419"),
                                            ("pt_BR", "pt-br"), ("fr", "fr")])
def test_espeak_speaks_the_calls_language_unless_a_voice_is_set(language, voice):
    assert voice_for(language) == voice


@pytest.mark.parametrize("value,kept", [("de", "de"), ("pt_BR", "pt_BR"), ("es-419", "es-419"), ("", ""),
                                        ("de\nSET VARIABLE X 1", ""), ("../de", ""), ("d" * 50, ""), ("deutsch!", "")])
def test_a_channel_language_is_used_only_when_it_looks_like_one(value, kept):
    assert channel_language(value) == kept


def test_the_agi_environments_language_reaches_the_request(tmp_path):
    env = {"agi_uniqueid": "1700000000.7", "agi_channel": "PJSIP/100-0001", "agi_language": "de",
           "agi_callerid": "100", "agi_calleridname": "Max"}
    recording = tmp_path / "1700000000.7" / "question-1.wav"
    request = parse_request(env, ["turn", str(recording), "NOISE", "1", "1700000000"], str(tmp_path))
    assert request.call.language == "de"
    env["agi_language"] = "de\x00; Goto"
    assert parse_request(env, ["turn", str(recording), "NOISE", "1", "1700000000"], str(tmp_path)).call.language == ""


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.conf"
    path.write_text("")
    return path


def test_install_puts_each_languages_prompts_where_playback_looks_for_them(tmp_path):
    paths = AsteriskPaths(etc=tmp_path / "etc", agi_bin=tmp_path / "agi-bin", data=tmp_path / "data",
                          spool=tmp_path / "spool", var_lib=tmp_path / "lib", log=tmp_path / "log")
    installer = Installer(paths, config_path=tmp_path / "voiceassist.conf", executable=Path("/usr/bin/voiceassist"),
                          config=load_config(_empty(tmp_path), environ={}))
    targets = {target.relative_to(tmp_path / "data" / "sounds") for _, target in installer.prompts()}
    names = {p.name for p in (REPO / "sounds").glob("*.ulaw")}
    assert {Path("custom/voiceassist") / name for name in names} <= targets
    for language in ("de", "es"):
        # Every prompt but the beep (the same everywhere: Asterisk falls back to the English one).
        assert {Path(language, "custom/voiceassist", name) for name in names - {"beep.ulaw"}} <= targets
    assert set(installer.prompt_directories()) == {paths.sounds, paths.sounds_in("de"), paths.sounds_in("es")}


def test_the_german_and_spanish_prompts_are_phone_audio_and_differ_from_the_english_ones():
    for name in (p.name for p in (REPO / "sounds").glob("*.ulaw") if p.name != "beep.ulaw"):
        english = (REPO / "sounds" / name).read_bytes()
        for language in ("de", "es"):
            spoken = (REPO / "sounds" / language / name).read_bytes()
            assert 8000 * 0.5 < len(spoken) < 8000 * 12 and spoken != english, (language, name)


def test_ask_answers_in_the_language_it_is_given(emulators, tmp_path):
    from harness.speech import spoken
    from voiceassist.admin.ask import ask

    question = spoken("Wo ist Ihr Büro?", "de", tmp_path)
    config = full_config(emulators, tmp_path, LANGUAGES + "[llm]\nprovider = knowledge\n")
    emulators["speech"].default_transcript = "Wo finde ich Ihr Büro?"
    result = ask(Assistant(config), question, language="de")
    assert result.language == "de-DE" and result.status == "ok", result.error
    assert result.reply.startswith("Hauptstraße zwölf") and result.providers["tts"] == "google_tts"
    assert emulators["speech"].requests[-1].json()["config"]["languageCode"] == "de-DE"
    with wave.open(str(result.answer_wav)) as answer:
        assert answer.getnframes() > 0


def test_the_first_question_tells_the_callers_language_and_the_call_goes_on_in_it(emulators, tmp_path):
    from harness.speech import spoken_question
    from voiceassist.admin.ask import ask
    from voiceassist.call.assistant import Assistant
    from voiceassist.storage.journal import Journal

    question = tmp_path / "question.wav"
    with wave.open(str(question), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(8000)
        wav.writeframes(spoken_question(tmp_path / "q", "Wo ist Ihr Büro?", 3700, 8000))
    emulators["speech"].transcripts = {3700: "Wo ist Ihr Büro?"}
    emulators["speech"].languages = {3700: "de-DE"}
    config = full_config(emulators, tmp_path, LANGUAGES + "[general]\ndetect_language = yes\n")
    result = ask(Assistant(config), question)  # an English route
    asked = emulators["speech"].requests[-1].json()["config"]
    assert (asked["languageCode"], asked["alternativeLanguageCodes"]) == ("en-US", ["de-DE", "es-ES"])
    assert result.status == "ok" and result.language == "de-DE", result.error
    sent = emulators["gemini"].requests[-1].json()["systemInstruction"]["parts"][0]["text"]
    assert "Always answer in German" in sent and "Hauptstraße zwölf" in sent  # German's knowledge file
    assert result.providers["tts"] == "google_tts"  # [tts.de-DE]
    _, turns = Journal(config).store().call_rows(result.uniqueid)
    assert turns[0]["language"] == "de-DE"


def test_without_detection_no_other_language_is_offered(emulators, tmp_path):
    from voiceassist.types import Recording

    config = full_config(emulators, tmp_path)
    Assistant(config).providers("stt").call(lambda stt: stt.transcribe(Recording(b"\x00\x10" * 16000, 8000)))
    assert "alternativeLanguageCodes" not in emulators["speech"].requests[-1].json()["config"]


@pytest.mark.parametrize("language,right", [("de", 0.85), ("es", 0.90)])
def test_german_and_spanish_callers_own_words_find_the_entry_and_nothing_else(language, right):
    from benchmarks.knowledge_match import DEFAULT_THRESHOLD, LANGUAGES, load_questions, score, selected

    questions = load_questions(REPO / "benchmarks" / "data" / LANGUAGES[language][0])
    outcome = score([q.expected for q in questions],
                    [selected(q.text, DEFAULT_THRESHOLD, language=language) for q in questions])
    assert (outcome.covered, outcome.total) == (20, 30)
    assert outcome.right >= right and outcome.wrong == 0.0, outcome


def test_a_german_compound_is_read_as_its_last_part():
    assert concepts("Gasheizkessel", "de") == concepts("Kessel", "de") == {"heizung"}
    assert concepts("Hausbesuch", "de") == {"besuch"} and concepts("Gas", "de") == {"gas"}


def test_a_language_section_applies_however_its_tag_is_cased(emulators, tmp_path):
    config = full_config(emulators, tmp_path, LANGUAGES + "[llm.DE-de]\nsystem_prompt = Sie sind ein Telefonassistent.\n")
    assert config.for_language("de-DE").llm.system_prompt == "Sie sind ein Telefonassistent."
    assert not any("DE-de" in warning for warning in config.warnings)


def test_a_language_sections_knowledge_file_others_can_write_is_refused_as_root(emulators, tmp_path):
    import os

    from voiceassist.errors import UntrustedFile

    if os.geteuid() != 0:
        pytest.skip("the trust check applies to root only")
    planted = tmp_path / "wissen.md"
    planted.write_text("## Wann haben Sie geöffnet?\nImmer.\n")
    planted.chmod(0o666)  # anyone could rewrite what German callers are told
    with pytest.raises(UntrustedFile, match="knowledge file"):
        full_config(emulators, tmp_path, LANGUAGES + f"[general.de-DE]\nknowledge_file = {planted}\n")
    planted.chmod(0o644)
    link = tmp_path / "link.md"
    link.symlink_to(planted)
    with pytest.raises(UntrustedFile, match="symbolic link"):
        full_config(emulators, tmp_path, LANGUAGES + f"[general.de-DE]\nknowledge_file = {link}\n")
