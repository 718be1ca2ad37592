"""A chat model that answers from the knowledge file: the entry whose question the caller asked.

Offline, instant and always right about what the admin wrote, which small local LLMs are not.
Questions are matched by meaning (:mod:`..text.matching`: stems and synonyms, weighted), so a
caller's own words find the entry. A question the file does not cover gets ``[llm]
unknown_answer`` ("I don't know that; I can take a message...") rather than the nearest entry or
an invented answer; or, with ``[knowledge] fallback`` set, is handed to that chat model (the
registry puts it after this one in the chain).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..config import setting
from ..errors import ConfigError, ProviderCannotAnswer
from ..text.knowledge import faq
from ..text.matching import KnowledgeIndex
from ..types import Conversation
from .base import Provider

NAME = "knowledge"


@dataclass(frozen=True)
class KnowledgeSettings:
    # Share of a question's meaning (its weighted concepts) an entry must cover to answer it.
    match_threshold: float = setting(0.5, minimum=0.01, maximum=1.0)
    # Chat model for questions the knowledge file does not answer ("none": [llm] unknown_answer).
    fallback: str = setting("none", choices=("none", "llama_cpp", "gemini", "openai_chat", "openai"))


@lru_cache(maxsize=8)
def _index(text: str, language: str) -> KnowledgeIndex:
    return KnowledgeIndex(faq(text), language)


class KnowledgeChatModel(Provider[KnowledgeSettings]):
    name = NAME
    Settings = KnowledgeSettings

    def setup(self) -> None:
        if not faq(self.context.knowledge()):
            raise ConfigError(f"[llm] provider = {NAME} needs [general] knowledge_file with questions "
                              "(headings or 'Q:' lines ending in '?') and their answers")

    def reply(self, conversation: Conversation) -> str:
        match = _index(self.context.knowledge(), self.context.language).best(conversation.question, self.settings.match_threshold)
        if match:
            return match.answer
        if self.settings.fallback == "none":
            return self.context.unknown_answer
        raise ProviderCannotAnswer(f"{NAME}: the knowledge file does not answer this question", provider=NAME)
