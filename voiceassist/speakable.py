"""Make a chat model's reply sayable on a phone: no markdown, lists, URLs or emojis."""

from __future__ import annotations

import re

_URL = re.compile(r"https?://\S+|www\.\S+")
_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`+|~~)")
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+", re.MULTILINE)
_HEADING = re.compile(r"^\s*#+\s*", re.MULTILINE)
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]")
_SPACES = re.compile(r"[ \t]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\x1b\[[0-9;]*[A-Za-z]")


def speakable(text: str, max_chars: int = 1200) -> str:
    """Plain sentences from ``text``; cut after the last full sentence within ``max_chars``."""
    text = _CONTROL.sub(" ", text.replace("\r", "\n"))
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _URL.sub("the link on our website", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _EMOJI.sub("", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # List items and headings become sentences of their own.
    text = " ".join(line if line[-1] in ".!?:;," else line + "." for line in lines)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
        text = cut[: end + 1] if end > 0 else cut.rsplit(" ", 1)[0] + "."
    return text


def first_sentences(text: str, count: int) -> str:
    """The first ``count`` distinct complete sentences of ``text`` (all of it if none is complete)."""
    sentences = re.findall(r"[^.!?]+[.!?]+", text)
    if not sentences:
        return text.strip()
    kept: list[str] = []
    for sentence in (s.strip() for s in sentences):
        if sentence not in kept:
            kept.append(sentence)
        if len(kept) == count:
            break
    return " ".join(kept)
