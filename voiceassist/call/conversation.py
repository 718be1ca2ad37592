"""The conversation a chat model is asked to continue, built in one place for every model.

Its instructions are ``[llm] system_prompt`` with the admin's knowledge file as grounding: all of
it for the cloud models, only the sections that match the question for a model with a small
context (``max_fact_chars``); then the call's earlier exchanges and the new question.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Config
from ..text.knowledge import knowledge_text, relevant_facts
from ..types import Conversation, Exchange

GROUNDING = ("\n\nAnswer from these facts when they are relevant; if they do not cover the question, say "
             "you do not know.\n\nFACTS:\n")


def conversation_for(config: Config, history: Sequence[Exchange], question: str,
                     max_fact_chars: int | None = None) -> Conversation:
    """The conversation for a model that takes at most ``max_fact_chars`` of facts (None: all)."""
    system = config.llm.system_prompt
    facts = knowledge_text(config).strip()
    if facts and max_fact_chars is not None and len(facts) > max_fact_chars:
        facts = relevant_facts(facts, question, max_fact_chars)
    if facts:
        system += GROUNDING + facts
    return Conversation(system=system, history=tuple(history), question=question)
