"""Replies made sayable; the knowledge file reaches the chat model and the offline recogniser."""

from __future__ import annotations

import pytest

from harness.helpers import config_for, talk
from voiceassist import providers
from voiceassist.text.knowledge import SAMPLE_KNOWLEDGE, faq, questions, relevant_facts
from voiceassist.text.speakable import first_sentences, speakable


def test_markdown_lists_urls_and_emojis_are_made_speakable():
    reply = ("**Opening hours** 🙂\n\n- Monday to Friday: 9 to 5\n- Saturday: 10 to 2\n"
             "See [our site](https://example.com) or https://example.com/hours for `details`.")
    assert speakable(reply) == ("Opening hours. Monday to Friday: 9 to 5. Saturday: 10 to 2. "
                                "See our site or the link on our website for details.")


def test_long_reply_is_cut_after_a_full_sentence():
    text = "This is a sentence. " * 200
    out = speakable(text, max_chars=100)
    assert out.endswith(".") and len(out) <= 100


def test_questions_are_found_in_a_knowledge_file():
    text = ("# Acme Plumbing\nWe fix sinks.\n\n## What are your opening hours?\nNine to five.\n"
            "Q: Where is your office?\n- Do you work on Sundays?\nNot a question.\n")
    assert questions(text) == ["what are your opening hours", "where is your office", "do you work on sundays"]


def test_every_chat_model_gets_the_knowledge_file(emulators, tmp_path):
    facts = tmp_path / "facts.md"
    facts.write_text("Acme Plumbing is open 9 to 5, Monday to Friday.\n")
    config = config_for(emulators, tmp_path, extra=f"[general]\nknowledge_file = {facts}\n")
    assert "open 9 to 5" in talk(config, "When are you open?").system
    providers.create("llm", config).reply(talk(config, "When are you open?"))
    sent = emulators["gemini"].requests[-1].json()["systemInstruction"]["parts"][0]["text"]
    assert "Acme Plumbing is open 9 to 5" in sent


def test_auto_picks_cloud_with_credentials_and_local_without(emulators, tmp_path, monkeypatch):
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    config = config_for(emulators, tmp_path)
    assert [providers.resolve(c, config) for c in ("stt", "llm", "tts")] == ["google_speech", "gemini", "openai_tts"]
    for section, key in (("google_speech", "credentials_file"), ("gemini", "api_key"), ("openai", "api_key")):
        config.sections[section][key] = ""
    assert [providers.resolve(c, config) for c in ("stt", "llm")] == ["moonshine", "llama_cpp"]
    assert providers.resolve("tts", config) in ("piper", "espeak")


def test_repeated_sentences_are_dropped_and_the_count_capped():
    text = "I can help. I am a bot. I can help. I am a bot. Call us. Bye. Trailing fragment"
    assert first_sentences(text, 3) == "I can help. I am a bot. Call us."


def test_relevant_facts_pick_the_matching_section():
    text = SAMPLE_KNOWLEDGE.read_text()
    facts = relevant_facts(text, "when are your opening hours", max_chars=300)
    assert "Monday to Friday from eight" in facts and "Main Street" not in facts


def test_faq_pairs_from_headings_and_q_lines():
    text = "# Shop\nIntro.\n\n## Are you open today?\nYes, until six.\n\nQ: Do you deliver?\nA: Only in town.\n"
    assert faq(text) == [("Are you open today?", "Yes, until six."), ("Do you deliver?", "Only in town.")]


def test_knowledge_model_answers_from_the_file_and_falls_back(emulators, tmp_path, monkeypatch):
    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    knowledge = SAMPLE_KNOWLEDGE
    config = config_for(emulators, tmp_path, extra=f"[general]\nknowledge_file = {knowledge}\n"
                                                   "[knowledge]\nfallback = gemini\n")
    config.sections["gemini"]["api_key"] = ""
    assert providers.resolve("llm", config) == "knowledge"  # no key, a knowledge file with answers
    config.sections["gemini"]["api_key"] = "test-gemini-key-123"  # for the fallback only
    config.sections["llm"]["provider"] = "knowledge"
    chain = providers.create_chain("llm", config)  # the fallback is the chain's next model
    assert chain.names == ["knowledge", "gemini"]

    def ask(question: str) -> str:
        return chain.call(lambda model: model.reply(talk(config, question)))[0]

    assert ask("what are your opening hours").startswith("Monday to Friday from eight")
    assert ask("where is your office").startswith("Twelve Main Street")
    assert emulators["gemini"].requests == []
    assert ask("Can you recommend a good pizza place?").startswith("Answer 1")  # the fallback
    assert len(emulators["gemini"].requests) == 1


@pytest.mark.parametrize("reply, spoken", [
    ("Set VA_ANSWER to the answer file.", "Set VA_ANSWER to the answer file."),
    ("Call extension_201 or __main__ for snake_case_names.", "Call extension_201 or main for snake_case_names."),
    ("_Really_ **open** at *nine*, `not` ~~ten~~.", "Really open at nine, not ten."),
])
def test_underscores_inside_words_are_not_emphasis(reply, spoken):
    assert speakable(reply) == spoken
