"""The knowledge matcher alone: does a caller's own wording find the right knowledge-file entry?

    .venv/bin/python -m benchmarks.knowledge_match

The 50 questions of ``benchmarks/data/paraphrases.tsv`` (30 paraphrases of the 5 entries of the
sample knowledge file voiceassist/templates/sample-knowledge.md, 20 questions it does not answer: names,
numbers, off-topic), as clean text, are given to the matcher the ``knowledge`` chat model uses
(:mod:`voiceassist.text.matching` through ``voiceassist.providers.knowledge._index``). Side by side
for thresholds 0.30 to 0.70 (``[knowledge] match_threshold``, default 0.50):

* right entry: the share of the 30 covered questions answered with the entry they ask for
  (target at least 90 %);
* wrong entry: the share of all 50 answered with an entry that is not theirs, a covered question
  given another entry or an uncovered one given any (target at most 5 %): the caller hears a
  confident wrong answer, worse than "I don't know";

then every miss at the default threshold with the scores, and the time one question takes (µs).
It runs in about a second. ``--language de`` or ``es`` runs the German or Spanish set
(``paraphrases.de.tsv``, ``paraphrases.es.tsv``: 20 paraphrases of the 5 entries of the German or
Spanish sample file and 10 questions it does not answer) with that language's stemmer, stop words
and synonyms. ``benchmarks.stt_accuracy`` gives the matcher what the offline
recognisers heard instead of the clean text.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "paraphrases.tsv"
# Per language: its question set and its sample knowledge file's suffix.
LANGUAGES = {"en": ("paraphrases.tsv", ""), "de": ("paraphrases.de.tsv", ".de"), "es": ("paraphrases.es.tsv", ".es")}
DEFAULT_THRESHOLD = 0.5
THRESHOLDS = tuple(round(0.30 + 0.05 * step, 2) for step in range(9))  # 0.30 .. 0.70
RIGHT_TARGET, WRONG_TARGET = 0.90, 0.05


@dataclass(frozen=True)
class Question:
    text: str
    expected: str | None  # the heading of the entry that answers it; None: the file does not


def load_questions(path: Path = DATA) -> list[Question]:
    """The questions of ``path``: "question<TAB>entry heading or -" lines, '#' starts a comment."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text, tab, expected = line.partition("\t")
        if not tab:
            raise ValueError(f"{path}:{number}: no tab between the question and its entry")
        expected = expected.strip()
        found.append(Question(text.strip(), None if expected == "-" else expected))
    return found


def knowledge_text(language: str = "en") -> str:
    """The sample knowledge file (in ``language``) the questions were written for."""
    from harness.speech import KNOWLEDGE
    path = KNOWLEDGE.with_name(f"sample-knowledge{LANGUAGES[language][1]}.md")
    return path.read_text(encoding="utf-8")


def selected(text: str, threshold: float, knowledge: str | None = None, language: str = "en") -> str | None:
    """The heading of the entry the ``knowledge`` chat model answers ``text`` with (None: none)."""
    from voiceassist.providers.knowledge import _index
    match = _index(knowledge_text(language) if knowledge is None else knowledge, language).best(text, threshold)
    return match.question if match else None


@dataclass(frozen=True)
class Outcome:
    right: float  # share of the covered questions given their entry
    wrong: float  # share of all the questions given an entry that is not theirs
    covered: int
    total: int


def score(expected: Sequence[str | None], chosen: Sequence[str | None]) -> Outcome:
    """Right and wrong shares of the entries ``chosen`` for questions expecting ``expected``."""
    covered = sum(e is not None for e in expected)
    right = sum(e is not None and c == e for e, c in zip(expected, chosen))
    wrong = sum(c is not None and c != e for e, c in zip(expected, chosen))
    return Outcome(right / covered if covered else 0.0, wrong / len(expected) if expected else 0.0,
                   covered, len(expected))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--language", choices=sorted(LANGUAGES), default="en",
                        help="the question set and sample knowledge file of this language (default: en)")
    parser.add_argument("--data", type=Path, help="questions file (default: the language's)")
    parser.add_argument("--rounds", type=int, default=200, help="timing rounds over all questions")
    args = parser.parse_args(argv)

    from voiceassist.providers.knowledge import _index

    language = args.language
    questions = load_questions(args.data or DATA.with_name(LANGUAGES[language][0]))
    knowledge = knowledge_text(language)
    expected = [q.expected for q in questions]
    covered = sum(e is not None for e in expected)
    print(f"knowledge matcher on clean text ({language}): {len(questions)} questions, {covered} covered by the "
          f"{len(_index(knowledge, language).entries)} entries of the sample knowledge file\n")

    outcomes = {t: score(expected, [selected(q.text, t, knowledge, language) for q in questions]) for t in THRESHOLDS}
    print(f"{'threshold':<28}" + "".join(f"{t:>7.2f}" for t in THRESHOLDS))
    print(f"{'right entry, %d covered' % covered:<28}" + "".join(f"{o.right:>7.0%}" for o in outcomes.values())
          + f"   target >= {RIGHT_TARGET:.0%}")
    print(f"{'wrong entry, all %d' % len(questions):<28}" + "".join(f"{o.wrong:>7.0%}" for o in outcomes.values())
          + f"   target <= {WRONG_TARGET:.0%}")
    at_default = outcomes[DEFAULT_THRESHOLD]
    missed = [name for name, met in (("right", at_default.right >= RIGHT_TARGET),
                                     ("wrong", at_default.wrong <= WRONG_TARGET)) if not met]
    verdict = "meets both targets" if not missed else f"misses the {' and '.join(missed)}-entry target"
    print(f"at the default {DEFAULT_THRESHOLD:.2f}: {verdict}\n")

    index = _index(knowledge, language)
    misses = []
    for q in questions:
        ranked = index.ranked(q.text)
        best = ranked[0] if ranked and ranked[0].score >= DEFAULT_THRESHOLD else None
        got = best.question if best else None
        if got != q.expected:
            top = ranked[0] if ranked else None
            own = next((m.score for m in ranked if m.question == q.expected), None)
            misses.append((q, got, top, own))
    print(f"misses at {DEFAULT_THRESHOLD:.2f} ({len(misses)}):")
    for q, got, top, own in misses:
        kind = "no entry  " if got is None else "WRONG     "
        nearest = f"best {top.score:.3f} {top.question!r}" if top else "no content words"
        mine = f"; its own entry {own:.3f}" if own is not None else ""
        print(f"  {kind}{q.text!r}: expected {q.expected or '-'}, got {got or '-'} ({nearest}{mine})")
    if not misses:
        print("  none")

    # Time per question: the index is built once per knowledge text (cached), as in a call.
    texts = [q.text for q in questions]
    started = time.perf_counter()
    _ = type(index)(index.entries, language)
    build_us = (time.perf_counter() - started) * 1e6
    per_question = []
    for _round in range(args.rounds):
        for text in texts:
            started = time.perf_counter_ns()
            index.best(text, DEFAULT_THRESHOLD)
            per_question.append((time.perf_counter_ns() - started) / 1000)
    per_question.sort()
    p90 = per_question[int(0.9 * (len(per_question) - 1))]
    print(f"\ntime per question: mean {statistics.fmean(per_question):.0f} µs, median "
          f"{statistics.median(per_question):.0f} µs, p90 {p90:.0f} µs "
          f"({args.rounds} rounds x {len(texts)}); building the index: {build_us:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
