"""Callers' own words find the knowledge file's entry; a question it does not cover gets an honest answer."""

from __future__ import annotations

from pathlib import Path

from harness.helpers import config_for, talk
from voiceassist import providers
from voiceassist.text.knowledge import SAMPLE_KNOWLEDGE, faq
from voiceassist.text.matching import KnowledgeIndex, concepts

REPO = Path(__file__).resolve().parents[1]
KNOWLEDGE = SAMPLE_KNOWLEDGE
PARAPHRASES = REPO / "benchmarks/data/paraphrases.tsv"


def paraphrases() -> list[tuple[str, str | None]]:
    rows = [line.split("\t") for line in PARAPHRASES.read_text().splitlines() if line and not line.startswith("#")]
    return [(question, None if entry == "-" else entry) for question, entry in rows]


def test_stems_and_synonyms_fold_a_callers_words_into_the_files_concepts():
    assert concepts("What are your rates?") == concepts("How much do you charge?") == {"cost"}
    assert concepts("My boilers stopped working") >= {"boiler", "fix"}
    assert "where" in concepts("Where's your shop located?") and "office" in concepts("the shop")
    assert concepts("the of and what is") == set()


def test_paraphrased_questions_find_their_entry_and_uncovered_ones_find_none():
    index = KnowledgeIndex(faq(KNOWLEDGE.read_text()))
    asked = paraphrases()
    assert len(asked) == 50 and sum(entry is not None for _, entry in asked) == 30
    right = wrong = 0
    misses = []
    for question, entry in asked:
        match = index.best(question, 0.5)
        found = match.question if match else None
        right += found is not None and found == entry
        wrong += found is not None and found != entry
        if found != entry:
            misses.append((question, entry, found))
    assert right >= 27, misses  # ≥ 90 % of the 30 paraphrases
    assert wrong <= 2, misses   # ≤ 5 % of all 50 given a wrong entry


def test_a_question_sharing_one_word_with_an_entry_is_not_answered_by_it():
    index = KnowledgeIndex(faq(KNOWLEDGE.read_text()))
    assert index.best("what is your email address", 0.5) is None  # not the office's address
    assert index.best("are you open on saturday", 0.5).question == "What are your opening hours?"
    assert index.best("are you closed on the weekend", 0.5).question == "Are you open on Sunday?"


def test_a_misheard_word_spelled_almost_like_a_known_one_counts_as_it():
    index = KnowledgeIndex(faq(KNOWLEDGE.read_text()))
    # Moonshine's hearing of espeak-ng voices on the phone line (benchmarks/stt_accuracy.py).
    assert index.best("What time do you clone in the evening?", 0.5).question == "What are your opening hours?"
    assert index.best("What does a callop cost?", 0.5).question == "How much does a visit cost?"
    assert index.best("What is the capital of France?", 0.5) is None  # unknown words stay unknown


def test_a_huge_hostile_question_is_matched_quickly_on_its_first_words():
    import time

    index = KnowledgeIndex(faq(KNOWLEDGE.read_text()))
    question = "boiler " + " ".join(f"zzxqv{n}" for n in range(200_000))
    started = time.perf_counter()
    assert index.best(question, 0.5) is None
    assert time.perf_counter() - started < 2.0


def test_a_long_answer_is_indexed_whole():
    answer = " ".join(f"detail{n}" for n in range(200)) + " parking behind the building."
    index = KnowledgeIndex([("Where do I leave the van?", answer), ("Do you fix boilers?", "Yes.")])
    assert index.best("is there parking", 0.5).question == "Where do I leave the van?"


def test_the_knowledge_model_says_the_configured_unknown_answer(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra=f"[general]\nknowledge_file = {KNOWLEDGE}\n[llm]\nprovider = knowledge\n"
                                                   "unknown_answer = Not in my notes; shall I take a message?\n")
    assert providers.resolve_all("llm", config) == ["knowledge"]  # no fallback by default: no invented answers
    model = providers.create("llm", config)
    assert model.reply(talk(config, "what does a callout cost")).startswith("A visit costs sixty dollars")
    assert model.reply(talk(config, "what is the capital of france")) == "Not in my notes; shall I take a message?"


def test_every_chat_model_is_told_to_give_the_unknown_answer_rather_than_guess(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra=f"[general]\nknowledge_file = {KNOWLEDGE}\n"
                                                   "[llm]\nunknown_answer = I can't say; I'll take a message.\n")
    providers.create("llm", config).reply(talk(config, "What is the capital of France?"))
    sent = emulators["gemini"].requests[-1].json()["systemInstruction"]["parts"][0]["text"]
    assert 'do not guess: say "I can\'t say; I\'ll take a message."' in sent and "Twelve Main Street" in sent
