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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

# Words that carry no topic in a spoken question (English); the rest are content words.
STOPWORDS = frozenset("""
a about after again all also am an and any anybody anyone anything are as at be been being but by can could
did do does doing don done for from get got had has have having he her here hi him his how i if i'm in into
is it it's its just know let like ll me might mine more most much must my need no not now of off ok okay on
one only or other our ours out over please really right say she should so some somebody someone something
still tell today during until than thank thanks that that's the their them then there these they thing this those to too
up us very want wanted was way we well were what what's when where which while who why will with would yes
yet you you're your yours hello hey sir madam maybe wondering wonder question ask asking
""".split())

# Concepts a caller names in many ways, for a business's phone line. The first word names the
# concept; a stem of any word of the group maps to it.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("cost", "price", "prices", "pricing", "charge", "charges", "fee", "fees", "rate", "rates", "expensive",
     "cheap", "costs", "pay", "quote", "tariff"),
    ("open", "opening", "hours", "close", "closed", "closing", "business", "time", "times"),
    ("where", "address", "located", "location", "find", "street", "directions", "situated", "based"),
    ("office", "shop", "store", "premises", "branch", "workshop"),
    ("boiler", "boilers", "heating", "heater", "furnace"),
    ("fix", "repair", "repairs", "mend", "service", "servicing", "broken", "working", "help", "look"),
    ("visit", "callout", "call-out", "house", "home", "visiting"),
    ("weekday", "week", "weekdays", "weekly", "monday", "tuesday", "wednesday", "thursday", "friday"),
    ("weekend", "weekends", "sunday", "sundays"),
    ("near", "next", "nearby", "beside", "opposite"),
    ("station", "railway", "train"),
)

QUESTION_WEIGHT = 1.0  # a concept found in an entry's question
ANSWER_WEIGHT = 0.6    # ... only in its answer
# How alike (difflib's ratio) a misheard word must be to a known one to count as it; at 0.8 the
# benchmark's transcripts found 5 % more entries and no wrong one (0.75: 1.7 % wrong).
MISHEARD_RATIO = 0.8
# A spoken question has a few dozen words; a longer one (hostile, or a recogniser gone wrong) is
# matched on its first words, so the fuzzy lookup's cost stays bounded. The file's own entries are
# read whole.
MAX_WORDS = 80
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@lru_cache(maxsize=1)
def _stemmer():  # type: ignore[no-untyped-def]
    import snowballstemmer
    return snowballstemmer.stemmer("english")


def _stem(word: str) -> str:
    return str(_stemmer().stemWord(word))


@lru_cache(maxsize=1)
def _concept_of() -> dict[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for group in SYNONYMS:
        for word in group:
            concepts = table.setdefault(_stem(word), [])
            if group[0] not in concepts:
                concepts.append(group[0])
    return {stem: tuple(concepts) for stem, concepts in table.items()}


def concepts(text: str) -> set[str]:
    """The concepts of ``text``: its content words stemmed, synonyms folded ("Where's your shop?"
    → {where, office})."""
    found: set[str] = set()
    for word in _content_words(text):
        found.update(_word_concepts(word))
    return found


def _content_words(text: str, limit: int | None = None) -> list[str]:
    words = (match[0] for match in _WORD.finditer(text.lower()))
    return list(itertools.islice((word for word in words if word not in STOPWORDS), limit))


def _word_concepts(word: str) -> tuple[str, ...]:
    stem = _stem(word.replace("'", ""))
    return _concept_of().get(stem, (stem,))


@dataclass(frozen=True)
class Match:
    question: str  # the entry's question, as the file has it
    answer: str
    score: float   # the share of the caller's question the entry covers, 0..1


class KnowledgeIndex:
    """The knowledge file's (question, answer) entries, ready to be matched to callers' questions."""

    def __init__(self, entries: Sequence[tuple[str, str]]) -> None:
        self.entries = tuple(entries)
        self._fields = [(concepts(question), concepts(answer)) for question, answer in self.entries]
        count = len(self._fields)
        entries_with = Counter(concept for asked, answered in self._fields for concept in asked | answered)
        # Inverse document frequency; a concept no entry has gets the highest weight.
        self._unknown = math.log(1 + (count + 1) / 0.5)
        self._weights = {c: math.log(1 + (count + 1) / (n + 0.5)) for c, n in entries_with.items()}
        # The words a misheard one may have been: the entries' own and the synonyms'.
        self._vocabulary = sorted({word for question, answer in self.entries for word in _content_words(question + " " + answer)}
                                  | {word for group in SYNONYMS for word in group})

    def _heard(self, question: str) -> set[str]:
        """The concepts of ``question``, a word the file does not know read as the known word it
        is spelled almost like."""
        found: set[str] = set()
        for word in _content_words(question, MAX_WORDS):
            meaning = _word_concepts(word)
            if len(word) >= 4 and not any(concept in self._weights for concept in meaning):
                alike = difflib.get_close_matches(word, self._vocabulary, n=1, cutoff=MISHEARD_RATIO)
                meaning = _word_concepts(alike[0]) if alike else meaning
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
