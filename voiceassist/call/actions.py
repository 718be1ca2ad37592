"""What the assistant may do besides answering: transfer the caller to a person, take a message,
end the call. One implementation behind both ways of reaching the assistant (the AGI flow of
8008 and the real-time conversation).

The chat model is offered these as tools (:func:`tools_for`); offline, or before asking the
model at all, :func:`match_intent` recognises the plain requests ("can I speak to someone?")
in the caller's words. Either way the request becomes an :class:`Action` only through
:func:`decide`, which allows nothing the admin did not list: a transfer goes to a name from
``[destinations]``, never to a number from the transcript or the model's output (those are refused,
logged, and the caller is told what is possible). The action's words ("Transferring you to
sales.") are spoken as the turn's answer; the action itself is carried out by the dialplan
(``[voiceassist-action]`` in extensions_custom.conf), where the admin can see and change it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Config, Destination
from ..logs import logger
from ..types import ToolCall, ToolSpec, ToolStep
from .tools import find_tool, run_tool

TRANSFER = "transfer"
TAKE_MESSAGE = "take_message"
END_CALL = "end_call"
# Longest farewell the model may choose (anything longer is the standard one).
MAX_FAREWELL_CHARS = 200


class ActionKind(enum.StrEnum):
    """What the dialplan does after the answer (``VA_ACTION``); stored with the turn."""

    TRANSFER = "transfer"
    MESSAGE = "message"
    END_CALL = "end_call"
    REFUSED = "refused"  # asked for something not allowed: nothing happens but the explanation


@dataclass(frozen=True)
class Action:
    """An action allowed by the configuration: ``target`` is the dialplan target of a transfer
    (context,extension,priority, from ``[destinations]`` only) or a message's mailbox; ``name``
    the destination's name; ``asked`` what was asked, as the model or caller put it."""

    kind: ActionKind
    target: str = ""
    name: str = ""
    asked: str = ""

    @property
    def ends_conversation(self) -> bool:
        return self.kind is not ActionKind.REFUSED

    def stored_target(self) -> str | None:
        if self.kind is ActionKind.REFUSED:
            return self.asked[:255] or None
        return f"{self.name} ({self.target})"[:255] if self.name else (self.target[:255] or None)


@dataclass(frozen=True)
class Decision:
    """What to say (the turn's answer, or its end) and the action, if any."""

    say: str
    action: Action


def tools_for(config: Config) -> tuple[ToolSpec, ...]:
    """The tools the chat model is offered with this configuration (none: it answers in words)."""
    actions, destinations = config.actions, config.destinations.entries
    tools = []
    if destinations:
        listed = "; ".join(f"{entry.name}: {entry.description}" for entry in destinations)
        tools.append(ToolSpec(
            TRANSFER,
            "Transfer the caller to a person or team. Use it when the caller asks to speak to someone, or "
            f"when the question needs one of these people. The destinations are: {listed}. You cannot dial "
            "numbers: if the caller asks for any other number or person, say you can only transfer to these.",
            {"type": "object", "properties": {"destination": {
                "type": "string", "enum": [entry.name for entry in destinations],
                "description": "the name of the destination"}}, "required": ["destination"]}))
    if actions.take_message != "no":
        tools.append(ToolSpec(
            TAKE_MESSAGE, "Let the caller leave a recorded message for the business, when they ask to leave one "
            "or when nobody can help them now.", {"type": "object", "properties": {}}))
    if actions.end_call:
        tools.append(ToolSpec(
            END_CALL, "End the call politely when the caller says they are done (goodbye, that's all, no more "
            "questions). Do not use it while they still have a question.",
            {"type": "object", "properties": {"farewell": {
                "type": "string", "description": "a short goodbye to say before hanging up"}}}))
    return tuple(tools)


def _destination_names(config: Config) -> str:
    names = [entry.name.replace("_", " ") for entry in config.destinations.entries]
    if not names:
        return ""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _refused(config: Config, asked: str, why: str) -> Decision:
    logger.warning("[ACTION] refused %s: %s", asked[:120], why)
    names = _destination_names(config)
    say = (f"Sorry, I can't do that. I can transfer you to {names}." if names
           else "Sorry, I can't transfer calls.")
    return Decision(say, Action(ActionKind.REFUSED, asked=asked))


def _transfer(config: Config, destination: Destination) -> Decision:
    spoken = destination.name.replace("_", " ")
    return Decision(f"Transferring you to {spoken}.",
                    Action(ActionKind.TRANSFER, target=destination.target, name=destination.name))


def decide(config: Config, call: ToolCall) -> Decision:
    """The action a tool call asks for, if the configuration allows it; else a refusal."""
    arguments: Mapping[str, Any] = call.arguments if isinstance(call.arguments, Mapping) else {}
    offered = {tool.name for tool in tools_for(config)}
    shown = f"{call.name}({', '.join(f'{k}={str(v)[:40]!r}' for k, v in list(arguments.items())[:3])})"
    if call.name not in offered:
        return _refused(config, shown, "not an action this configuration offers")
    if call.name == TRANSFER:
        asked = arguments.get("destination")
        destination = config.destinations.get(asked.strip().lower()) if isinstance(asked, str) else None
        if destination is None:
            return _refused(config, shown, "not a listed destination")
        return _transfer(config, destination)
    if call.name == TAKE_MESSAGE:
        return Decision("Of course, you can leave a message.",
                        Action(ActionKind.MESSAGE, target=config.actions.voicemail_box))
    farewell = arguments.get("farewell")
    say = "Thank you for calling. Goodbye."
    if isinstance(farewell, str) and 0 < len(farewell.strip()) <= MAX_FAREWELL_CHARS:
        say = farewell.strip()
    return Decision(say, Action(ActionKind.END_CALL))


# -- the caller's plain requests, recognised without a model -------------------------------------------
_ASKING = (r"(speak|talk|chat)\s+(to|with)|transfer\s+me|put\s+me\s+(through|on)|connect\s+me|get\s+me|"
           r"i\s+(want|need|would\s+like|'d\s+like)|can\s+i\s+(have|get)|may\s+i\s+have|give\s+me|reach")
_DIALLING = re.compile(r"\b(dial|call|ring|transfer\s+me\s+to|connect\s+me\s+to|put\s+me\s+through\s+to)\b"
                       r"[^0-9+]{0,20}(?P<number>\+?[0-9][0-9 ()-]{2,})")
_MESSAGE = re.compile(r"\b(leave|take)\s+(a\s+|my\s+)?message\b")
_DONE = re.compile(r"^(no\s+)?(thanks?|thank\s+you)?[\s,.!]*(that'?s\s+(all|it)|nothing\s+else|good\s*bye|bye)"
                   r"([\s,.!]+(thanks?|thank\s+you|good\s*bye|bye))*[\s,.!]*$")


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9+' ]", " ", text.lower().replace("’", "'")).split())


def match_intent(config: Config, transcript: str) -> ToolCall | None:
    """A request for an action in the caller's own words, recognised by rules (so the offline
    assistant can act too, and a clear request needs no model): asking for a listed destination
    or for a person (``[actions] transfer_phrases``: the operator), asking to dial a number (a
    request :func:`decide` refuses), leaving a message, or saying goodbye."""
    words = _normalised(transcript)
    if not words:
        return None
    actions = config.actions
    if dialled := _DIALLING.search(words):
        if not any(entry.name.replace("_", " ") in words for entry in config.destinations.entries):
            return ToolCall(TRANSFER, {"destination": dialled["number"].strip()})
    asking = re.search(rf"\b({_ASKING})\b", words) is not None
    for entry in config.destinations.entries:
        name = entry.name.replace("_", " ")
        if asking and re.search(rf"\b{re.escape(name)}\b", words):
            return ToolCall(TRANSFER, {"destination": entry.name})
    if actions.operator:
        phrases = "|".join(re.escape(_normalised(p)) for p in actions.transfer_phrases if _normalised(p))
        if phrases and (re.fullmatch(rf"({phrases})( please)?", words)
                        or (asking and re.search(rf"\b({phrases})\b", words))):
            return ToolCall(TRANSFER, {"destination": actions.operator})
    if actions.take_message != "no" and _MESSAGE.search(words):
        return ToolCall(TAKE_MESSAGE, {})
    if actions.end_call and _DONE.fullmatch(words):
        return ToolCall(END_CALL, {})
    return None


# What the caller hears when a tool failed, timed out, or the model called too many.
TOOL_APOLOGY = "Sorry, I couldn't look that up right now."


class ActingReply(Iterator[str]):
    """The chat model's reply with actions and tools taken out: iterate it for the words to speak.

    Text passes through. A tool call for one of the business's HTTP tools (:mod:`.tools`) is made
    here and the model goes on from its result (``follow_up``, at most ``[tools]
    max_calls_per_turn`` calls; a failure is an apology, noted in :attr:`notes`). Any other tool
    call ends the reply with what :func:`decide` says to say, and :attr:`action` holds the action
    (None: a plain answer). Not a generator: :meth:`close` may come from another thread while the
    reader waits for the next piece (a barge-in), and it must reach the provider's stream."""

    def __init__(self, config: Config, pieces: Iterator[str | ToolCall],
                 follow_up: Callable[[tuple[ToolStep, ...]], Iterator[str | ToolCall]] | None = None) -> None:
        self.config = config
        self._pieces = pieces
        self._follow_up = follow_up
        self._said = False
        self._ended = False
        self.action: Action | None = None
        self.steps: list[ToolStep] = []
        self.notes: list[str] = []

    def __next__(self) -> str:
        while True:
            if self._ended:
                raise StopIteration
            piece = next(self._pieces)
            if not isinstance(piece, ToolCall):
                self._said = True
                return piece
            tool = find_tool(self.config, piece.name)
            if tool is None:
                return self._act(piece)
            self.close()
            if len(self.steps) >= self.config.tools.max_calls_per_turn or self._follow_up is None:
                return self._apologise(f"{piece.name} not called: more than {len(self.steps)} tool calls in one answer")
            result = run_tool(tool, piece, self.config.tools.max_response_chars)
            logger.info("[TOOL] %s %s", piece.name, "answered" if result.ok else f"failed: {result.error}")
            if not result.ok:
                return self._apologise(f"{piece.name} failed: {result.error}")
            self.steps.append(ToolStep(piece, result.content))
            self._pieces = self._follow_up(tuple(self.steps))

    def _act(self, call: ToolCall) -> str:
        self._ended = True
        decision = decide(self.config, call)
        self.action = decision.action
        logger.info("[ACTION] %s %s", decision.action.kind, decision.action.stored_target() or "")
        self.close()  # nothing of the model's reply follows its tool call
        if not decision.say:
            raise StopIteration
        return (" " if self._said else "") + decision.say

    def _apologise(self, note: str) -> str:
        self._ended = True
        self.notes.append(note)
        return (" " if self._said else "") + TOOL_APOLOGY

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
