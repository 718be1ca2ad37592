"""A chat model that answers from the knowledge file: the answer under the question that matches.

Offline, instant and always right about what the admin wrote, which small local LLMs are not. A
question the file does not cover is handed to the next chat model of the fallback chain (the
registry puts ``[knowledge] fallback``, default ``llama_cpp``, after it), or gets "I don't know"
when the fallback is ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import setting
from ..errors import ConfigError, ProviderCannotAnswer
from ..text.knowledge import best_faq_answer, faq
from ..types import Conversation
from .base import Provider

NAME = "knowledge"
NO_ANSWER = "Sorry, I don't have an answer to that. Please call back during office hours."


@dataclass(frozen=True)
class KnowledgeSettings:
    # Share of content words two questions must have in common to count as the same question.
    match_threshold: float = setting(0.5, minimum=0.01, maximum=1.0)
    # Chat model for questions the knowledge file does not answer ("none": say so).
    fallback: str = setting("llama_cpp", choices=("none", "llama_cpp", "gemini", "openai_chat", "openai"))


class KnowledgeChatModel(Provider[KnowledgeSettings]):
    name = NAME
    Settings = KnowledgeSettings

    def setup(self) -> None:
        if not faq(self.context.knowledge()):
            raise ConfigError(f"[llm] provider = {NAME} needs [general] knowledge_file with questions "
                              "(headings or 'Q:' lines ending in '?') and their answers")

    def reply(self, conversation: Conversation) -> str:
        answer = best_faq_answer(self.context.knowledge(), conversation.question, self.settings.match_threshold)
        if answer:
            return answer
        if self.settings.fallback == "none":
            return NO_ANSWER
        raise ProviderCannotAnswer(f"{NAME}: the knowledge file does not answer this question", provider=NAME)
