"""The knowledge file: facts (opening hours, addresses, policies) an admin gives the assistant.

Plain text or markdown, ``[general] knowledge_file``. Every chat model receives it in its system
prompt. Lines that are questions (``Q: ...``, ``- ...?``, ``## ...?``) also become the phrase list
of the offline speech recogniser, which is far more accurate on 8 kHz audio with a closed grammar.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from .matching import concepts

MAX_KNOWLEDGE_CHARS = 20000
# An imaginary plumber's facts: what `ask` answers from when there is no config file, and what the
# main job, the tests and the benchmarks ask about.
SAMPLE_KNOWLEDGE = Path(__file__).resolve().parents[1] / "templates" / "sample-knowledge.md"


@lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> str:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return text[:MAX_KNOWLEDGE_CHARS]


def read_knowledge(path: str) -> str:
    """The text of the knowledge file at ``path`` (``""`` for none), read again only when it changed."""
    if not path:
        return ""
    try:
        return _read(path, Path(path).stat().st_mtime)
    except OSError as exc:
        raise ConfigError(f"[general] knowledge_file = {path} cannot be read: {exc.strerror}") from None


def knowledge_text(config: Config) -> str:
    """The knowledge file's text, or ``""`` when none is configured."""
    return read_knowledge(config.general.knowledge_file)


_QUESTION_LINE = re.compile(r"^\s*(?:[-*#>]+\s*)*(?:Q\s*[:.]\s*)?(?P<q>[^\n]*\?)\s*$", re.IGNORECASE | re.MULTILINE)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def questions(text: str) -> list[str]:
    """The questions in a knowledge text, normalised to lower-case words."""
    found = []
    for match in _QUESTION_LINE.finditer(text):
        words = _words(match["q"])
        if words:
            phrase = " ".join(words)
            if phrase not in found:
                found.append(phrase)
    return found


def sections(text: str) -> list[str]:
    """The knowledge text split at markdown headings (or blank lines when it has none)."""
    parts = re.split(r"\n(?=#+\s)", text) if re.search(r"^#+\s", text, re.MULTILINE) else re.split(r"\n\s*\n", text)
    return [p.strip() for p in parts if p.strip()]


def relevant_facts(text: str, question: str, max_chars: int = 1200, language: str = "en") -> str:
    """The sections sharing the most words with ``question``, within ``max_chars``: grounding for a
    small local model whose context cannot hold (or whose attention cannot use) the whole file."""
    wanted = concepts(question, language)
    scored = []
    for index, part in enumerate(sections(text)):
        scored.append((len(wanted & concepts(part, language)), -index, part))
    chosen, used = [], 0
    for score, _index, part in sorted(scored, reverse=True):
        if score == 0 or used + len(part) > max_chars:
            continue
        chosen.append(part)
        used += len(part)
    return "\n\n".join(chosen)


def faq(text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs: a question heading and the text under it, or a ``Q:`` line and the
    lines after it up to a blank line."""
    pairs: list[tuple[str, str]] = []
    for part in sections(text):
        first, _, body = part.partition("\n")
        heading = re.sub(r"^#+\s*", "", first).strip()
        paragraph = re.split(r"\n\s*\n", body.strip())[0]  # the answer is the first paragraph
        if heading.endswith("?") and paragraph.strip() and not re.match(r"\s*Q\s*[:.]", paragraph):
            pairs.append((heading, " ".join(paragraph.split())))
    for match in re.finditer(r"^\s*Q\s*[:.]\s*(?P<q>.+\?)\s*\n(?P<a>(?:[^\n]*\S[^\n]*\n?)+)", text, re.MULTILINE):
        answer = re.sub(r"^\s*A\s*[:.]\s*", "", match["a"].strip())
        pairs.append((match["q"].strip(), " ".join(answer.split())))
    return pairs
