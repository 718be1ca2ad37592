"""Make a chat model's reply sayable on a phone: no markdown, lists, URLs or emojis."""

from __future__ import annotations

import re

from .languages import rules_for

_URL = re.compile(r"https?://\S+|www\.\S+")
_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
# Emphasis marks around text (**bold**, __bold__, *it*, _it_, ~~struck~~, `code`) are dropped, the
# text kept. An underscore inside a word (VA_ANSWER, file_name) is not emphasis and stays.
_PAIRED_EMPHASIS = re.compile(r"(\*\*|~~|\*)(?=\S)(.+?)(?<=\S)\1|(?<!\w)(__|_)(?=\S)(.+?)(?<=\S)\3(?!\w)|`+([^`]*)`+")
_STRAY_MARKS = re.compile(r"\*+|~~|`+|(?<!\w)_+|_+(?!\w)")
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+", re.MULTILINE)
_HEADING = re.compile(r"^\s*#+\s*", re.MULTILINE)
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]")
_SPACES = re.compile(r"[ \t]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\x1b\[[0-9;]*[A-Za-z]")


# The longest reply read to a caller (about a minute and a half of speech).
MAX_REPLY_CHARS = 1200


def speakable(text: str, max_chars: int = MAX_REPLY_CHARS, language: str = "en") -> str:
    """Plain sentences from ``text`` (a URL is said as the link on our website, in ``language``);
    cut after the last full sentence within ``max_chars``."""
    text = _CONTROL.sub(" ", text.replace("\r", "\n"))
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _URL.sub(rules_for(language).link, text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _PAIRED_EMPHASIS.sub(lambda m: m[2] or m[4] or m[5] or "", text)
    text = _STRAY_MARKS.sub("", text)
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


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars``, cut after sentences where possible, else
    between words (a provider's input limit must not cut a word or drop the rest)."""
    pieces: list[str] = []
    current = ""
    for sentence in re.findall(r"[^.!?]+(?:[.!?]+|$)\s*", text.strip()) or [text]:
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            head, sentence = sentence[:cut].strip(), sentence[cut:].strip()
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
        if not sentence:
            continue
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


class SentenceSplitter:
    """Turns a stream of text chunks into complete sentences as soon as each one ends.

    A sentence ends at ``.``, ``!`` or ``?`` followed by a space; pieces shorter than
    ``min_chars`` are joined to the next one so "Dr." or "Yes." alone do not become a clip.
    """

    _END = re.compile(r"[.!?]+[\"')\]]*\s+")

    def __init__(self, min_chars: int = 20) -> None:
        self.min_chars = min_chars
        self._buffer = ""

    def feed(self, chunk: str) -> list[str]:
        self._buffer += chunk
        sentences: list[str] = []
        start = 0
        for match in self._END.finditer(self._buffer):
            if match.end() - start >= self.min_chars:
                sentences.append(self._buffer[start:match.end()].strip())
                start = match.end()
        self._buffer = self._buffer[start:]
        return sentences

    def finish(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []
