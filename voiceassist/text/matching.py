"""Which knowledge-file entry a caller's question asks for, by meaning rather than wording.

Callers never use the file's wording: "what does a callout cost?" asks "How much does a visit
cost?", "my heating is broken" asks "Do you fix boilers?". Each entry (its question and its
answer) and the caller's question are reduced to *concepts*: content words, stemmed (Snowball),
with common synonyms folded together ("price", "charge", "rates" → cost). An entry's score is the
share of the question's weight it covers; a concept the file never mentions keeps full weight, so
"what is your email address?" covers only half of itself and is not taken for the office address.
A score under the threshold means the file does not answer the question: the caller is told so
instead of being given the nearest entry.

The question comes from a recogniser, which mishears: a word the file does not know that is
spelled almost like one it does ("clone" for close, "callop" for callout) is taken as that word.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .languages import LanguageRules, rules_for

QUESTION_WEIGHT = 1.0  # a concept found in an entry's question
ANSWER_WEIGHT = 0.6    # ... only in its answer
# How alike (difflib's ratio) a misheard word must be to a known one to count as it; at 0.8 the
# benchmark's transcripts found 5 % more entries and no wrong one (0.75: 1.7 % wrong).
MISHEARD_RATIO = 0.8
# A spoken question has a few dozen words; a longer one (hostile, or a recogniser gone wrong) is
# matched on its first words, so the fuzzy lookup's cost stays bounded. The file's own entries are
# read whole.
MAX_WORDS = 80
# Letters of any script (German's ä and ß, Spanish's ñ and accents) and digits; an apostrophe
# inside a word ("what's") keeps it one word.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


@lru_cache(maxsize=16)
def _stemmer(algorithm: str) -> Any:
    import snowballstemmer
    return snowballstemmer.stemmer(algorithm)


def _plain(word: str) -> str:
    """``word`` without accents: a recogniser may write "dias" where the file has "días"."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _stem(word: str, rules: LanguageRules) -> str:
    stem = str(_stemmer(rules.stemmer).stemWord(word)) if rules.stemmer else word
    return _plain(stem)


@lru_cache(maxsize=16)
def _concept_of(rules: LanguageRules) -> dict[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for group in rules.synonyms:
        for word in group:
            concepts = table.setdefault(_stem(word, rules), [])
            if group[0] not in concepts:
                concepts.append(group[0])
    return {stem: tuple(concepts) for stem, concepts in table.items()}


def concepts(text: str, language: str = "en") -> set[str]:
    """The concepts of ``text`` in ``language`` (a tag: en-US, de-DE, es): its content words
    stemmed, synonyms folded ("Where's your shop?" → {where, office})."""
    rules = rules_for(language)
    found: set[str] = set()
    for word in _content_words(text, rules):
        found.update(_word_concepts(word, rules))
    return found


def _content_words(text: str, rules: LanguageRules, limit: int | None = None) -> list[str]:
    words = (match[0] for match in _WORD.finditer(text.lower()))
    return list(itertools.islice((word for word in words if word not in rules.stopwords), limit))


def _word_concepts(word: str, rules: LanguageRules) -> tuple[str, ...]:
    stem = _stem(word.replace("'", ""), rules)
    known = _concept_of(rules)
    if stem not in known and rules.compounds:
        # The head of a compound is its last part: "gasheizkessel" → "kessel" (parts of 5 letters
        # or more, longest first, so "kessel" is not taken for a shorter word it ends with).
        head = next((part for part in _compound_heads(rules) if stem.endswith(part) and stem != part), None)
        if head is not None:
            return known[head]
    return known.get(stem, (stem,))


@lru_cache(maxsize=16)
def _compound_heads(rules: LanguageRules) -> tuple[str, ...]:
    return tuple(sorted((stem for stem in _concept_of(rules) if len(stem) >= 5), key=len, reverse=True))


@dataclass(frozen=True)
class Match:
    question: str  # the entry's question, as the file has it
    answer: str
    score: float   # the share of the caller's question the entry covers, 0..1


class KnowledgeIndex:
    """The knowledge file's (question, answer) entries, ready to be matched to callers' questions."""

    def __init__(self, entries: Sequence[tuple[str, str]], language: str = "en") -> None:
        self.entries = tuple(entries)
        self.rules = rules_for(language)
        self._fields = [(concepts(question, language), concepts(answer, language)) for question, answer in self.entries]
        count = len(self._fields)
        entries_with = Counter(concept for asked, answered in self._fields for concept in asked | answered)
        # Inverse document frequency; a concept no entry has gets the highest weight.
        self._unknown = math.log(1 + (count + 1) / 0.5)
        self._weights = {c: math.log(1 + (count + 1) / (n + 0.5)) for c, n in entries_with.items()}
        # The words a misheard one may have been: the entries' own and the synonyms'.
        self._vocabulary = sorted({word for question, answer in self.entries
                                   for word in _content_words(question + " " + answer, self.rules)}
                                  | {word for group in self.rules.synonyms for word in group})

    def _heard(self, question: str) -> set[str]:
        """The concepts of ``question``, a word the file does not know read as the known word it
        is spelled almost like."""
        found: set[str] = set()
        for word in _content_words(question, self.rules, MAX_WORDS):
            meaning = _word_concepts(word, self.rules)
            if len(word) >= 4 and not any(concept in self._weights for concept in meaning):
                alike = difflib.get_close_matches(word, self._vocabulary, n=1, cutoff=MISHEARD_RATIO)
                meaning = _word_concepts(alike[0], self.rules) if alike else meaning
            found.update(meaning)
        return found

    def ranked(self, question: str) -> list[Match]:
        """Every entry with its score for ``question``, best first."""
        wanted = self._heard(question)
        total = sum(self._weights.get(c, self._unknown) for c in wanted)
        if not total:
            return []
        matches = []
        for (known, answer), (asked, answered) in zip(self.entries, self._fields):
            covered = sum(self._weights[c] * (QUESTION_WEIGHT if c in asked else ANSWER_WEIGHT)
                          for c in wanted if c in asked or c in answered)
            matches.append(Match(known, answer, covered / total))
        return sorted(matches, key=lambda match: -match.score)

    def best(self, question: str, threshold: float) -> Match | None:
        """The entry that answers ``question``, or None when none covers ``threshold`` of it."""
        ranked = self.ranked(question)
        return ranked[0] if ranked and ranked[0].score >= threshold else None
