"""A chat model that answers from the knowledge file: the answer under the question that matches.

Offline, instant and always right about what the admin wrote, which small local LLMs are not. A
question the file does not cover goes to the fallback chat model (``[knowledge] fallback``, default
``llama_cpp``), or gets "I don't know" when the fallback is ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Config
from ..errors import ConfigError
from ..knowledge import best_faq_answer, faq, knowledge_text
from .base import Exchange

NAME = "knowledge"
NO_ANSWER = "Sorry, I don't have an answer to that. Please call back during office hours."


class KnowledgeChatModel:
    name = NAME

    def __init__(self, config: Config) -> None:
        self.config = config
        section = config.section(NAME)
        self.threshold = section.get_float("match_threshold")
        text = knowledge_text(config)
        if not faq(text):
            raise ConfigError(f"[llm] provider = {NAME} needs [general] knowledge_file with questions "
                              "(headings or 'Q:' lines ending in '?') and their answers")
        fallback = section.get("fallback").strip().lower()
        self._fallback = None
        if fallback not in ("", "none"):
            from . import REGISTRY, create_named

            if fallback not in REGISTRY["llm"] or fallback == NAME:
                raise ConfigError(f"[{NAME}] fallback = {fallback!r} is not a chat model")
            self._fallback = create_named("llm", fallback, config)

    def reply(self, history: Sequence[Exchange], question: str) -> str:
        answer = best_faq_answer(knowledge_text(self.config), question, self.threshold)
        if answer:
            return answer
        if self._fallback is not None:
            return str(self._fallback.reply(history, question))
        return NO_ANSWER
