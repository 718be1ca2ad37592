"""The knowledge file: facts (opening hours, addresses, policies) an admin gives the assistant.

Plain text or markdown, ``[general] knowledge_file``. Every chat model receives it in its system
prompt. Lines that are questions (``Q: ...``, ``- ...?``, ``## ...?``) also become the phrase list
of the offline speech recogniser, which is far more accurate on 8 kHz audio with a closed grammar.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from .config import Config
from .errors import ConfigError

MAX_KNOWLEDGE_CHARS = 20000


@lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> str:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return text[:MAX_KNOWLEDGE_CHARS]


def knowledge_text(config: Config) -> str:
    """The knowledge file's text, or ``""`` when none is configured."""
    path = config.section("general").get("knowledge_file", "")
    if not path:
        return ""
    try:
        return _read(path, Path(path).stat().st_mtime)
    except OSError as exc:
        raise ConfigError(f"[general] knowledge_file = {path} cannot be read: {exc.strerror}") from None


def system_prompt(config: Config) -> str:
    """The chat models' system prompt, with the knowledge file appended as grounding."""
    prompt = config.section("llm").get("system_prompt")
    facts = knowledge_text(config).strip()
    if facts:
        prompt += ("\n\nAnswer from these facts when they are relevant; if they do not cover the "
                   "question, say you do not know.\n\nFACTS:\n" + facts)
    return prompt


_QUESTION_LINE = re.compile(r"^\s*(?:[-*#>]+\s*)*(?:Q\s*[:.]\s*)?(?P<q>[^\n]*\?)\s*$", re.IGNORECASE | re.MULTILINE)


def questions(text: str) -> list[str]:
    """The questions in a knowledge text, normalised to lower-case words."""
    found = []
    for match in _QUESTION_LINE.finditer(text):
        words = re.findall(r"[a-z']+", match["q"].lower())
        if words:
            phrase = " ".join(words)
            if phrase not in found:
                found.append(phrase)
    return found


_STOPWORDS = frozenset("a an the is are do does you your we our i to of in on for and or what where when how "
                       "can could would it this that be at".split())


def sections(text: str) -> list[str]:
    """The knowledge text split at markdown headings (or blank lines when it has none)."""
    parts = re.split(r"\n(?=#+\s)", text) if re.search(r"^#+\s", text, re.MULTILINE) else re.split(r"\n\s*\n", text)
    return [p.strip() for p in parts if p.strip()]


def relevant_facts(text: str, question: str, max_chars: int = 1200) -> str:
    """The sections sharing the most words with ``question``, within ``max_chars``: grounding for a
    small local model whose context cannot hold (or whose attention cannot use) the whole file."""
    wanted = set(re.findall(r"[a-z']+", question.lower())) - _STOPWORDS
    scored = []
    for index, part in enumerate(sections(text)):
        words = set(re.findall(r"[a-z']+", part.lower()))
        scored.append((len(wanted & words), -index, part))
    chosen, used = [], 0
    for score, _index, part in sorted(scored, reverse=True):
        if score == 0 or used + len(part) > max_chars:
            continue
        chosen.append(part)
        used += len(part)
    return "\n\n".join(chosen)
