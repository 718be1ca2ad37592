"""Process AGI: Asterisk starts ``voiceassist agi`` per call and talks to it over stdin/stdout."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from ..errors import AGIError, RequestError, VoiceAssistError
from ..logs import logger
from ..types import CallState
from .agi import AGISession

if TYPE_CHECKING:
    from ..call.assistant import Assistant
    from ..config import Config


def run_process_agi(config_path: str | None = None) -> int:
    """Run one AGI session; always exit 0 so Asterisk's AGISTATUS reflects the call, not us."""
    try:
        # Unbuffered stdin: what Asterisk sent after the environment block must stay visible to
        # select() (a forged block in a caller ID leaves the real rest of the block waiting).
        session = AGISession(getattr(sys.stdin.buffer, "raw", sys.stdin.buffer), sys.stdout.buffer)
    except AGIError as exc:
        # Exit status 1: AGISTATUS=FAILURE, and the dialplan plays the apology.
        print(f"voiceassist agi: {exc} (run this from Asterisk's AGI())", file=sys.stderr)
        _log_refusal(config_path, str(exc))
        return 1
    # Without a handler Asterisk's SIGHUP would kill us mid-turn and lose the turn.
    session.install_sighup_handler()
    if session.arguments()[:1] == ["listen"]:
        _listen(session, config_path)
        exit_now(0)
    try:
        from ..call.assistant import start_assistant
        from ..providers import load_full_config
        from .routes import serve_session

        # Not strict: a bad value is the turn's error (the caller hears the apology and the turn
        # is stored with it), not a setup failure nobody sees.
        assistant = start_assistant(load_full_config(config_path, strict=False))
    except VoiceAssistError as exc:
        _report_setup_error(session, str(exc))
        return 0
    try:
        serve_session(session, assistant)
    except AGIError as exc:
        logger.info("[AGI] %s session ended: %s", session.env.get("agi_uniqueid", "?"), exc)
    except Exception:
        logger.exception("[AGI] unexpected error")
    if session.arguments()[:1] == ["hangup"]:
        # The caller is gone: post this call's webhook events now (no sender runs in this process).
        from ..call.call_events import deliver_after_hangup

        deliver_after_hangup(assistant)
    exit_now(0)
    return 0  # not reached


def _listen(session: AGISession, config_path: str | None) -> None:
    """EAGI: find the end of the question; with ``answer`` (process AGI's flow) answer it too.

    ``listen,<wav>,<grace_s>,<end_ms>,<max_s>[,answer,<turn>,<start>,<exten>,<linkedid>]``, validated
    first (:func:`~voiceassist.asterisk.dialplan.parse_listen`: the recording inside this call's directory).
    While the caller speaks, a thread loads the SDKs, clients and the database layer, so
    the answer starts as soon as the question ends, instead of after a new Python's cold start
    (about 2 s, see benchmarks/cold_start.py). Without ``answer`` only the listener runs (it
    imports almost nothing) and the dialplan hands the question to the FastAGI server.
    """
    from ..config import load_config
    from .dialplan import answered_by_listener, listener_failed, parse_listen, tell_dialplan
    from .listen import has_audio, run_listener

    try:
        if not has_audio(session):
            return
        try:
            config = load_config(config_path)
            general = config.general
            request = parse_listen(session.env, session.arguments()[1:], general.answer_dir)
        except RequestError as exc:
            from ..logs import configure_logging
            from .routes import refuse_request

            configure_logging(config)  # the refusal belongs in our log, not only on Asterisk's console
            refuse_request(session, general.prompts.rstrip("/"), exc)
            answered_by_listener(session)  # the dialplan plays VA_ANSWER, as after an answer
            return
        except VoiceAssistError as exc:
            # The config is broken: the dialplan records the question the other way, and the
            # turn's AGI reports the problem to the caller.
            logger.error("[AGI] listen: %s", exc)
            listener_failed(session)
            return
        ready: dict[str, Assistant] = {}
        warm_up = (threading.Thread(target=_prepare, args=(config, ready, request.call.language), daemon=True)
                   if request.answer else None)
        if warm_up is not None:
            warm_up.start()
        outcome = run_listener(session, request)
        if warm_up is None or outcome is None:
            return
        stopped = time.time()
        warm_up.join()
        assistant = ready.get("assistant")
        if assistant is None:
            return  # the dialplan runs the usual AGI turn, which reports the setup error
        from ..call.turn import Turn
        from .channel import AGIChannel

        channel = AGIChannel(session)
        channel.set_state(CallState.THINKING)
        turn = request.turn(outcome.heard, stopped, outcome.silence_waited_ms)
        answered = Turn(channel, assistant, turn).run()
        channel.flush()
        tell_dialplan(session, answered, assistant.config)
        answered_by_listener(session)
    except AGIError as exc:
        logger.info("[AGI] %s listener ended: %s", session.env.get("agi_uniqueid", "?"), exc)
    except Exception:
        logger.exception("[AGI] unexpected error")


def _prepare(config: Config, ready: dict[str, Assistant], language: str = "") -> None:
    """Build what a turn needs (run in a thread while the caller speaks); errors surface later."""
    try:
        import importlib

        from ..call.assistant import start_assistant

        for module in ("call.turn", "call.playback", "audio.conversion"):  # imported now, not after the question
            importlib.import_module(f"voiceassist.{module}")

        assistant = start_assistant(config)
        try:
            # The first provider of each chain: its SDK imported, its client created. Problems are
            # not reported here: the turn's fallback chain meets (and logs) the same ones.
            assistant.in_language(language).prepare(every_provider=False, every_language=False)
            assistant.journal().store()
        except Exception:
            pass
        ready["assistant"] = assistant
    except Exception as exc:
        logger.error("[AGI] listener could not prepare the turn: %s", exc)


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


def _log_refusal(config_path: str | None, reason: str) -> None:
    """A refused AGI environment goes to our log too (if the config lets us find it)."""
    try:
        from ..config import load_config
        from ..logs import configure_logging

        configure_logging(load_config(config_path))
        logger.warning("[AGI] AGI environment refused: %s", reason)
    except VoiceAssistError:
        pass


def _report_setup_error(session: AGISession, message: str) -> None:
    """The config is broken: say so once on the console and play the can't-answer prompt."""
    from ..config import DEFAULTS
    from .dialplan import send_prompt

    logging.getLogger("voiceassist").error("[AGI] %s", message)
    try:
        session.verbose(f"[AGI] voiceassist cannot start: {message}", 1)
    except AGIError:
        pass
    send_prompt(session, DEFAULTS["general"]["prompts"] + "/cant-answer", "error")
