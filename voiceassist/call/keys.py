"""Keys on the phone (DTMF): what each configured key does, the same in both ways of reaching the
assistant. ``[actions] key_operator`` transfers to the operator destination, ``key_repeat`` says
the last answer again, ``key_skip`` skips the rest of the answer (and, in a real-time call with
nothing playing, ends the call politely)."""

from __future__ import annotations

import enum

from ..config import Config


class KeyAction(enum.StrEnum):
    OPERATOR = "operator"
    REPEAT = "repeat"
    SKIP = "skip"


def key_map(config: Config) -> dict[str, KeyAction]:
    """The keys that do something with this configuration (the operator key only when there is
    an operator destination to go to)."""
    actions = config.actions
    keys = {actions.key_skip: KeyAction.SKIP, actions.key_repeat: KeyAction.REPEAT}
    if actions.operator and config.destinations.get(actions.operator) is not None:
        keys[actions.key_operator] = KeyAction.OPERATOR
    return {key: action for key, action in keys.items() if key}


def escape_keys(config: Config) -> str:
    """The keys that stop a sound being played, as AGI's STREAM FILE and ControlPlayback take them."""
    return "".join(key_map(config))
