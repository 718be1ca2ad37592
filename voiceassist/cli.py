"""Command line: one function per command, each found through ``set_defaults(run=...)``.

``voiceassist agi`` (process AGI, what Asterisk runs), ``serve`` (FastAGI), ``ai-server`` (the
external-AI WebSocket protocol), ``ask``,
``install``/``uninstall``/``doctor``, ``db upgrade|status|flush|prune``,
``calls [show|export|stats]``, ``web [adduser|deluser|users]`` (the web console). Errors are one line on stderr and an exit status
(:class:`~voiceassist.errors.VoiceAssistError` carries it: 2 for a configuration problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import VoiceAssistError

if TYPE_CHECKING:
    from .call.assistant import Assistant
    from .config import Config

Command = Callable[[argparse.Namespace], int]


# -- the commands ------------------------------------------------------------------------------------
def run_agi(args: argparse.Namespace) -> int:
    from .asterisk.process_agi import run_process_agi

    return run_process_agi(args.config)


def run_serve(args: argparse.Namespace) -> int:
    from .asterisk.fastagi import serve

    assistant = _assistant(args)
    assistant.check_providers()  # an unknown provider name stops the server before it listens
    for warning in assistant.config.warnings:
        print(f"voiceassist serve: warning: {warning}", file=sys.stderr)
    console = None
    if assistant.config.web.enabled:
        from .admin.console.server import start_console_process

        console = start_console_process(_config_path(args))
    try:
        serve(assistant, args.host, args.port, args.max_calls, workers=args.workers)
    finally:
        if console is not None:
            console.terminate()
            console.wait(10)
    return 0


def run_web(args: argparse.Namespace) -> int:
    from .admin.console.server import run_console

    assistant = _assistant(args)  # as root: the console runs as the asterisk user
    for warning in assistant.config.warnings:
        print(f"voiceassist web: warning: {warning}", file=sys.stderr)
    return run_console(assistant.config)


def run_web_adduser(args: argparse.Namespace) -> int:
    import getpass

    from .admin.console.server import add_user
    from .providers import load_full_config

    config = load_full_config(args.config)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise VoiceAssistError("the passwords differ; nothing was changed")
    return add_user(config, args.name, args.role, password)


def run_web_deluser(args: argparse.Namespace) -> int:
    from .admin.console.server import delete_user
    from .providers import load_full_config

    return delete_user(load_full_config(args.config), args.name)


def run_web_users(args: argparse.Namespace) -> int:
    from .admin.console.server import list_users
    from .providers import load_full_config

    return list_users(load_full_config(args.config))


def run_ai_server(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .asterisk.ai_server import AIProtocolServer

    assistant = _assistant(args)
    assistant.check_providers()
    assistant.prepare()
    server = AIProtocolServer(assistant, assistant.config.ai_server, args.host, args.port)
    server.start()
    print(f"voiceassist ai-server: listening on ws://{server.host}:{server.port}/", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from .admin.ask import ask

    result = ask(_assistant(args), Path(args.question), language=args.language or "")
    data = dataclasses.asdict(result)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"config      {data['config']}")
        print(f"call        {data['uniqueid']}  status {data['status']}  language {data['language']}")
        print(f"transcript  {data['transcript']}")
        print(f"reply       {data['reply']}")
        print("providers   " + "  ".join(f"{capability} {name or '-'}" for capability, name in data["providers"].items()))
        if data["error"]:
            print(f"error       {data['error']}")
        print("timings ms  " + "  ".join(f"{k} {v}" for k, v in data["timings"].items()))
        print(f"answer      {data['answer_ulaw']}  (listen: {data['answer_wav']})")
    return 0 if result.status == "ok" else 1


def run_install(args: argparse.Namespace) -> int:
    from .admin.install import run_install as install

    return install(config_path=_config_path(args), dry_run=args.dry_run, reload=not args.no_reload,
                   fastagi=args.fastagi, web=args.web)


def run_uninstall(args: argparse.Namespace) -> int:
    from .admin.install import run_uninstall as uninstall

    return uninstall(purge=args.purge, dry_run=args.dry_run, reload=not args.no_reload, config_path=_config_path(args))


def run_doctor(args: argparse.Namespace) -> int:
    from .admin.doctor import run_doctor as doctor

    return doctor(str(_config_path(args)), online=args.online, as_json=args.json)


def run_db_upgrade(args: argparse.Namespace) -> int:
    from .admin.commands import db_upgrade

    return db_upgrade(_assistant(args))


def run_db_status(args: argparse.Namespace) -> int:
    from .admin.commands import db_status

    return db_status(_assistant(args))


def run_db_flush(args: argparse.Namespace) -> int:
    from .admin.commands import db_flush

    return db_flush(_assistant(args))


def run_db_prune(args: argparse.Namespace) -> int:
    from .admin.commands import db_prune

    return db_prune(_assistant(args), args.days, args.audio_days, args.dry_run)


def run_calls(args: argparse.Namespace) -> int:
    from .admin.commands import calls_list

    return calls_list(_assistant(args), args.limit, args.days)


def run_calls_show(args: argparse.Namespace) -> int:
    from .admin.commands import calls_show

    return calls_show(_assistant(args), args.uniqueid)


def run_calls_export(args: argparse.Namespace) -> int:
    from .admin.commands import calls_export

    assistant = _assistant(args)  # as root: the output file is opened first (see _work_as_service_user)
    return calls_export(assistant, args.format, args.days, args.output)


def run_calls_stats(args: argparse.Namespace) -> int:
    from .admin.commands import calls_stats

    return calls_stats(_assistant(args), args.days, args.json)


# -- what the commands share -------------------------------------------------------------------------
def _language_argument(value: str) -> str:
    from .call.requests import channel_language

    if not channel_language(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a language (e.g. de, es-ES, pt_BR)")
    return value


def _config_path(args: argparse.Namespace) -> Path:
    from .config import default_config_path

    return Path(args.config or os.environ.get("VOICEASSIST_CONFIG") or default_config_path())


def _assistant(args: argparse.Namespace) -> Assistant:
    """The config loaded and checked (as root: refused unless only root can write it), then, as
    root, the asterisk user's identity taken before its files are opened (logging, database,
    spool, answers)."""
    from .call.assistant import start_assistant
    from .providers import load_full_config

    config = load_full_config(args.config)
    if args.run is run_ask:
        config = _ask_config(config, args.config)
    _work_as_service_user(args)
    return start_assistant(config)


def _ask_config(config: Config, explicit: str | None) -> Config:
    """The configuration a call would use, with the files moved to the user's own directory on a
    machine without Asterisk; says on stderr what it found."""
    from .admin.ask import per_user_locations
    from .config import DEFAULT_CONFIG_PATH
    from .providers import load_full_config
    from .text.knowledge import SAMPLE_KNOWLEDGE

    overrides: dict[str, dict[str, str]] = {}
    if config.path is None:
        # What a new user tries first: with the sample facts the offline stack gives real answers.
        overrides["general"] = {"knowledge_file": str(SAMPLE_KNOWLEDGE)}
        print(f"voiceassist ask: no config file ({DEFAULT_CONFIG_PATH} does not exist): built-in defaults with the "
              f"sample knowledge file {SAMPLE_KNOWLEDGE} (a plumber's hours, address and prices); "
              "give your own with --config", file=sys.stderr)
    base, moved = per_user_locations(config)
    if base is not None:
        print(f"voiceassist ask: Asterisk is not installed here: answers, database and log go to {base}",
              file=sys.stderr)
        for section, values in moved.items():
            overrides.setdefault(section, {}).update(values)
    return load_full_config(explicit, overrides=overrides) if overrides else config


def _work_as_service_user(args: argparse.Namespace) -> None:
    """Run as root, become the asterisk user before touching its files (spool, database, answers).

    What root alone can do is done first: a ``calls export --output`` file is opened as root (the
    admin's own choice of path) and becomes standard output.
    """
    from .system.privileges import SERVICE_USER, drop_privileges, service_account

    if os.geteuid() != 0 or service_account() is None:
        return  # not root, or no asterisk user to become (a development machine)
    if args.run is run_calls_export and args.output:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
        args.output = None
    if drop_privileges() and args.run is run_ask and not os.access(args.question, os.R_OK):
        raise VoiceAssistError(f"{args.question} is not readable by the {SERVICE_USER} user, who runs `ask` for root: "
                               f"copy it somewhere {SERVICE_USER} can read (e.g. /tmp) and run again")


# -- the parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voiceassist", description="Asterisk/FreePBX voice assistant.")
    parser.add_argument("--version", action="version", version=f"voiceassist {__version__}")
    parser.add_argument("--config", help="config file (default $VOICEASSIST_CONFIG or /etc/voiceassist/voiceassist.conf)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, run: Command,
                help: str) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help)
        sub.set_defaults(run=run)
        return sub

    agi = command(commands, "agi", run_agi, "run one AGI session on stdin/stdout (Asterisk runs this)")
    agi.add_argument("args", nargs=argparse.REMAINDER, help="AGI() arguments (also read from agi_arg_N)")
    serve = command(commands, "serve", run_serve, "run the FastAGI server")
    serve.add_argument("--host", help="address to bind (default [fastagi] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default [fastagi] port, 4573)")
    serve.add_argument("--max-calls", type=int, help="concurrent calls before the busy prompt")
    serve.add_argument("--workers", type=int, help="processes sharing the port (default [fastagi] workers, 1)")
    ai_server = command(commands, "ai-server", run_ai_server,
                        "serve the external-AI WebSocket protocol: this assistant as another connector's AI")
    ai_server.add_argument("--host", help="address to bind (default [ai_server] host, 127.0.0.1)")
    ai_server.add_argument("--port", type=int, help="port (default [ai_server] port, 8765)")
    ask = command(commands, "ask", run_ask, "run one turn on a recorded question, without Asterisk")
    ask.add_argument("question", help="the question: a WAV (or any audio file ffmpeg reads)")
    ask.add_argument("--json", action="store_true", help="print the result as JSON")
    ask.add_argument("--language", metavar="TAG", type=_language_argument,
                     help="the call's language, as a channel's (de, es-ES); default [general] language")

    web = command(commands, "web", run_web, "run the web console ([web]); `web adduser|deluser|users` for its accounts")
    web_commands = web.add_subparsers(dest="web_command", metavar="ACTION")
    adduser = command(web_commands, "adduser", run_web_adduser, "add a console account, or set its password and role")
    adduser.add_argument("name", help="the account's name (letters, digits, . _ -)")
    adduser.add_argument("--role", choices=("admin", "viewer"), default="viewer",
                         help="viewer: calls, transcripts, statistics; admin: also audio, deleting calls (default viewer)")
    adduser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    deluser = command(web_commands, "deluser", run_web_deluser, "delete a console account")
    deluser.add_argument("name")
    command(web_commands, "users", run_web_users, "list the console's accounts")

    db = commands.add_parser("db", help="the database: schema upgrades, spool replay, retention")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    command(db_commands, "upgrade", run_db_upgrade, "create or migrate the tables to this version's schema")
    command(db_commands, "status", run_db_status, "where the database is, its schema revision and the spool")
    command(db_commands, "flush", run_db_flush, "replay spooled turns into the database")
    prune = command(db_commands, "prune", run_db_prune, "delete calls (and their audio) older than the retention")
    prune.add_argument("--days", type=int, help="keep calls this many days (default [privacy] retention_days)")
    prune.add_argument("--audio-days", type=int,
                       help="keep recordings and answers this many days (default [privacy] audio_retention_days)")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")

    install = command(commands, "install", run_install, "install into Asterisk/FreePBX (as root; idempotent)")
    install.add_argument("--dry-run", action="store_true", help="print every change without making it")
    install.add_argument("--no-reload", action="store_true", help="do not reload the dialplan")
    install.add_argument("--fastagi", action="store_true", help="also install the systemd unit of `voiceassist serve`")
    install.add_argument("--web", action="store_true", help="also install the systemd unit of the web console")
    uninstall = command(commands, "uninstall", run_uninstall, "remove what install added (keeps the config)")
    uninstall.add_argument("--purge", action="store_true", help="also remove the config, database and spool directories")
    uninstall.add_argument("--dry-run", action="store_true", help="print every change without making it")
    uninstall.add_argument("--no-reload", action="store_true", help="do not reload the dialplan")
    doctor = command(commands, "doctor", run_doctor, "check the installation: one line per check, exit 1 on FAIL")
    doctor.add_argument("--online", action="store_true", help="make one tiny real request to each provider")
    doctor.add_argument("--json", action="store_true", help="print JSON")

    calls = command(commands, "calls", run_calls, "recent calls; `calls show ID`, `calls export`, `calls stats`")
    calls.add_argument("--limit", type=int, default=20, help="how many calls (default 20)")
    calls.add_argument("--days", type=float, help="only calls of the last N days")
    calls_commands = calls.add_subparsers(dest="calls_command", metavar="ACTION")
    show = command(calls_commands, "show", run_calls_show, "one call's conversation")
    show.add_argument("uniqueid", help="Asterisk's UNIQUEID of the call (first column of `voiceassist calls`)")
    export = command(calls_commands, "export", run_calls_export, "every turn as CSV or JSON lines")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--days", type=float, default=argparse.SUPPRESS, help="only turns of the last N days")
    export.add_argument("--output", "-o", help="file to write (default standard output)")
    stats = command(calls_commands, "stats", run_calls_stats, "percentiles of each stage's time, answered turns")
    stats.add_argument("--days", type=float, default=argparse.SUPPRESS, help="only turns of the last N days")
    stats.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # What we create (answers, recordings, spool entries, the SQLite database, logs) is for the
    # asterisk user and its group only: 0640 files, 0750 directories, whatever umask we inherit.
    os.umask(0o027)
    if args.run is run_agi:
        return int(run_agi(args))  # it reports to Asterisk itself and always exits on its own terms
    try:
        return int(args.run(args))
    except VoiceAssistError as exc:
        print(f"voiceassist: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"voiceassist: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
