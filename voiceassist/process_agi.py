"""Process AGI: Asterisk starts ``voiceassist agi`` per call and talks to it over stdin/stdout."""

from __future__ import annotations

import logging
import os
import sys

from .agi import AGISession
from .errors import AGIError, VoiceAssistError
from .logs import logger


def run_process_agi(config_path: str | None = None) -> int:
    """Run one AGI session; always exit 0 so Asterisk's AGISTATUS reflects the call, not us."""
    try:
        session = AGISession(sys.stdin.buffer, sys.stdout.buffer)
    except AGIError as exc:
        print(f"voiceassist agi: {exc} (run this from Asterisk's AGI())", file=sys.stderr)
        return 1
    # Without a handler Asterisk's SIGHUP would kill us mid-turn and lose the turn.
    session.install_sighup_handler()
    if session.arguments()[:1] == ["listen"]:
        # EAGI end-of-question detection: no config, providers or database needed (fast start).
        from .listen import run_listener

        try:
            run_listener(session)
        except AGIError:
            pass
        exit_now(0)
    try:
        from .assistant import Assistant
        from .config import load_config
        from .flow import handle_session

        assistant = Assistant(load_config(config_path))
    except VoiceAssistError as exc:
        _report_setup_error(session, str(exc))
        return 0
    try:
        handle_session(session, assistant)
    except AGIError as exc:
        logger.info("[AGI] %s session ended: %s", session.env.get("agi_uniqueid", "?"), exc)
    except Exception:
        logger.exception("[AGI] unexpected error")
    exit_now(0)
    return 0  # not reached


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown.

    Asterisk waits for the AGI process to exit before the dialplan goes on (to Playback of the
    answer, or to "anything else?"), and tearing down the SDKs' modules, clients and threads costs
    about 0.8 s in the rig. Everything worth keeping is already done: the turn is committed to the
    database or fsync'd to the spool; logs and stdout are flushed here.
    """
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _report_setup_error(session: AGISession, message: str) -> None:
    """The config is broken: say so once on the console and play the can't-answer prompt."""
    from .config import DEFAULTS

    logging.getLogger("voiceassist").error("[AGI] %s", message)
    try:
        session.verbose(f"[AGI] voiceassist cannot start: {message}", 1)
        session.set_variable("VA_ANSWER", DEFAULTS["general"]["prompts"] + "/cant-answer")
        session.set_variable("VA_CONTINUE", "0")
        session.set_variable("VOICEASSIST_STATUS", "error")
    except AGIError:
        pass
