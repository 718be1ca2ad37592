"""Word accuracy of the offline speech-to-text on spoken test questions at phone quality.

    .venv/bin/python -m benchmarks.stt_accuracy

Each knowledge-file question is spoken by several espeak-ng voices, sent through an 8 kHz μ-law
phone line, and recognised by PocketSphinx with and without the knowledge grammar, side by side.
Word accuracy = 1 - word error rate (Levenshtein distance over words / reference words).
"""

from __future__ import annotations

import sys

from harness.speech import measure


def main() -> int:
    results = measure()
    print(f"{'mode':<16} {'word accuracy':>13} {'exact':>7} {'s/question':>10}  (n={results['grammar']['questions']})")
    for mode, r in results.items():
        print(f"{mode:<16} {r['word_accuracy']:>13.1%} {r['exact']:>7.1%} {r['seconds_per_question']:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
