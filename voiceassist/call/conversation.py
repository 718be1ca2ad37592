"""The conversation a chat model is asked to continue, built in one place for every model.

Its instructions are ``[llm] system_prompt`` (told the call's language when it is not English)
with the admin's knowledge file as grounding: all of it for the cloud models, only the sections
that match the question for a model with a small context (``max_fact_chars``); then the call's
earlier exchanges and the new question.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from ..config import Config
from ..errors import VoiceAssistError
from ..providers.base import ChatModel, StreamingChatModel, ToolCallingChatModel
from ..text.knowledge import knowledge_text, relevant_facts
from ..text.languages import answer_in, unknown_answer
from ..types import Conversation, Exchange, ToolCall, ToolStep
from .actions import ActingReply, match_intent, tools_for
from .assistant import Assistant
from .tools import configured_tools

# The "provider" stored for a turn whose request was recognised without asking a model.
RULES = "rules"
# ... and of an answer given for a key the caller pressed.
KEYS = "keys"

# With facts, a question they do not cover gets the admin's honest answer, not an invented one.
GROUNDING = ("\n\nAnswer from these facts. If they do not cover the question, do not guess: say "
             "\"{unknown}\"\n\nFACTS:\n")


def conversation_for(config: Config, history: Sequence[Exchange], question: str,
                     max_fact_chars: int | None = None, memory: str = "") -> Conversation:
    """The conversation for a model that takes at most ``max_fact_chars`` of facts (None: all);
    ``memory``: what is known about the caller (their earlier calls, the business's records:
    :mod:`.summary`), with its own headings."""
    language = config.general.language
    system = config.llm.system_prompt
    if speak := answer_in(language):
        system += "\n\n" + speak
    facts = knowledge_text(config).strip()
    if facts and max_fact_chars is not None and len(facts) > max_fact_chars:
        facts = relevant_facts(facts, question, max_fact_chars, language)
    if facts:
        system += GROUNDING.format(unknown=unknown_answer(config.llm.unknown_answer, language)) + facts
    if memory:
        system += "\n\n" + memory
    tools = tools_for(config) + tuple(tool.spec() for tool in configured_tools(config))
    return Conversation(system=system, history=tuple(history), question=question, tools=tools)


def reply_pieces(llm: ChatModel, conversation: Conversation) -> Iterator[str | ToolCall]:
    """The chat model's reply as a stream (with the tools offered when it can call them);
    models without streaming give it in one piece."""
    if conversation.tools and isinstance(llm, ToolCallingChatModel):
        return llm.act(conversation)
    if isinstance(llm, StreamingChatModel):
        return llm.stream(conversation)
    return iter([llm.reply(conversation)])


def open_reply(assistant: Assistant, history: Sequence[Exchange], question: str,
               on_failure: Callable[[str, VoiceAssistError], None],
               scripted: str | ToolCall | None = None, memory: str = "") -> tuple[ActingReply, str]:
    """The reply to ``question`` from the first chat model of the chain that answers, and its
    name; a plain request for an action ("can I speak to someone?") is recognised by rules
    first, without a model (:data:`RULES`). Iterate the reply for the words to speak; its
    ``action`` says what the call does next. ``scripted``: the reply is this, not the model's (a
    key the caller pressed: the operator, or the last answer again)."""
    config = assistant.config
    if scripted is not None:
        return ActingReply(config, iter([scripted])), KEYS
    intent = match_intent(config, question)
    if intent is not None:
        return ActingReply(config, iter([intent])), RULES
    chain = assistant.providers("llm")

    def ask(steps: tuple[ToolStep, ...]) -> Iterator[str | ToolCall]:
        pieces, _ = chain.stream(lambda llm: reply_pieces(llm, dataclasses.replace(
            conversation_for(config, history, question, llm.max_fact_chars, memory), steps=steps)), on_failure)
        return pieces

    pieces, provider = chain.stream(
        lambda llm: reply_pieces(llm, conversation_for(config, history, question, llm.max_fact_chars, memory)),
        on_failure)
    return ActingReply(config, pieces, follow_up=ask), provider
