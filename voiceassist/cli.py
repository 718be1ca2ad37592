"""Command line: ``voiceassist agi`` (process AGI), ``serve`` (FastAGI), ``ask``, ``db``, ``calls``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from . import __version__
from .errors import VoiceAssistError

if TYPE_CHECKING:
    from .config import Config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voiceassist", description="Asterisk/FreePBX voice assistant.")
    parser.add_argument("--version", action="version", version=f"voiceassist {__version__}")
    parser.add_argument("--config", help="config file (default $VOICEASSIST_CONFIG or /etc/voiceassist/voiceassist.conf)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agi = commands.add_parser("agi", help="run one AGI session on stdin/stdout (Asterisk runs this)")
    agi.add_argument("args", nargs=argparse.REMAINDER, help="AGI() arguments (also read from agi_arg_N)")
    serve = commands.add_parser("serve", help="run the FastAGI server")
    serve.add_argument("--host", help="address to bind (default [fastagi] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default [fastagi] port, 4573)")
    serve.add_argument("--max-calls", type=int, help="concurrent calls before the busy prompt")
    serve.add_argument("--workers", type=int, help="processes sharing the port (default [fastagi] workers, 1)")
    ask = commands.add_parser("ask", help="run one turn on a recorded question, without Asterisk")
    ask.add_argument("question", help="the question: a WAV (or any audio file ffmpeg reads)")
    ask.add_argument("--json", action="store_true", help="print the result as JSON")

    db = commands.add_parser("db", help="the database: schema upgrades, spool replay, retention")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="create or migrate the tables to this version's schema")
    db_commands.add_parser("status", help="where the database is, its schema revision and the spool")
    db_commands.add_parser("flush", help="replay spooled turns into the database")
    prune = db_commands.add_parser("prune", help="delete calls (and their audio) older than the retention")
    prune.add_argument("--days", type=int, help="keep calls this many days (default [privacy] retention_days)")
    prune.add_argument("--audio-days", type=int,
                       help="keep recordings and answers this many days (default [privacy] audio_retention_days)")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")

    install = commands.add_parser("install", help="install into Asterisk/FreePBX (as root; idempotent)")
    install.add_argument("--dry-run", action="store_true", help="print every change without making it")
    install.add_argument("--no-reload", action="store_true", help="do not reload the dialplan")
    install.add_argument("--fastagi", action="store_true", help="also install the systemd unit of `voiceassist serve`")
    uninstall = commands.add_parser("uninstall", help="remove what install added (keeps the config)")
    uninstall.add_argument("--purge", action="store_true", help="also remove the config, database and spool directories")
    uninstall.add_argument("--dry-run", action="store_true", help="print every change without making it")
    uninstall.add_argument("--no-reload", action="store_true", help="do not reload the dialplan")
    doctor = commands.add_parser("doctor", help="check the installation: one line per check, exit 1 on FAIL")
    doctor.add_argument("--online", action="store_true", help="make one tiny real request to each provider")
    doctor.add_argument("--json", action="store_true", help="print JSON")

    calls = commands.add_parser("calls", help="recent calls; `calls show ID`, `calls export`, `calls stats`")
    calls.add_argument("--limit", type=int, default=20, help="how many calls (default 20)")
    calls.add_argument("--days", type=float, help="only calls of the last N days")
    calls_commands = calls.add_subparsers(dest="calls_command", metavar="ACTION")
    show = calls_commands.add_parser("show", help="one call's conversation")
    show.add_argument("uniqueid", help="Asterisk's UNIQUEID of the call (first column of `voiceassist calls`)")
    export = calls_commands.add_parser("export", help="every turn as CSV or JSON lines")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--days", type=float, default=argparse.SUPPRESS, help="only turns of the last N days")
    export.add_argument("--output", "-o", help="file to write (default standard output)")
    stats = calls_commands.add_parser("stats", help="percentiles of each stage's time, answered turns")
    stats.add_argument("--days", type=float, default=argparse.SUPPRESS, help="only turns of the last N days")
    stats.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _print_ask(result: object, as_json: bool) -> None:
    import dataclasses
    import json

    data = dataclasses.asdict(result)  # type: ignore[call-overload]
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print(f"config      {data['config']}")
    print(f"call        {data['uniqueid']}  status {data['status']}")
    print(f"transcript  {data['transcript']}")
    print(f"reply       {data['reply']}")
    print("providers   " + "  ".join(f"{capability} {name or '-'}" for capability, name in data["providers"].items()))
    if data["error"]:
        print(f"error       {data['error']}")
    print("timings ms  " + "  ".join(f"{k} {v}" for k, v in data["timings"].items()))
    print(f"answer      {data['answer_ulaw']}  (listen: {data['answer_wav']})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # What we create (answers, recordings, spool entries, the SQLite database, logs) is for the
    # asterisk user and its group only: 0640 files, 0750 directories, whatever umask we inherit.
    os.umask(0o027)
    if args.command == "agi":
        from .asterisk.process_agi import run_process_agi

        return run_process_agi(args.config)
    try:
        if args.command in ("install", "uninstall", "doctor"):
            return _system_command(args)
        from .call.assistant import Assistant
        from .providers import load_full_config

        config = load_full_config(args.config)  # as root: refused unless only root can write it
        if args.command == "ask":
            config = _ask_config(config, args.config)
        _work_as_service_user(args)
        assistant = Assistant(config)  # logging, database and spool opened as the asterisk user
        if args.command == "serve":
            from .asterisk.fastagi import serve

            assistant.check_providers()  # an unknown provider name stops the server before it listens
            for warning in assistant.config.warnings:
                print(f"voiceassist serve: warning: {warning}", file=sys.stderr)
            serve(assistant, args.host, args.port, args.max_calls, workers=args.workers)
        elif args.command == "ask":
            from .admin.ask import ask

            result = ask(assistant, args.question)
            _print_ask(result, args.json)
            return 0 if result.status == "ok" else 1
        elif args.command == "db":
            from .admin.commands import run_db_command

            return run_db_command(assistant, args)
        elif args.command == "calls":
            from .admin.commands import run_calls_command

            return run_calls_command(assistant, args)
        return 0
    except VoiceAssistError as exc:
        print(f"voiceassist: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"voiceassist: error: {exc}", file=sys.stderr)
        return 1


def _ask_config(config: Config, explicit: str | None) -> Config:
    """The configuration a call would use, with the files moved to the user's own directory on a
    machine without Asterisk; says on stderr what it found."""
    from .admin.ask import per_user_locations
    from .config import DEFAULT_CONFIG_PATH
    from .providers import load_full_config

    if config.path is None:
        print(f"voiceassist ask: no config file ({DEFAULT_CONFIG_PATH} does not exist): built-in defaults, "
              "so no knowledge file; give one with --config", file=sys.stderr)
    base, moved = per_user_locations(config)
    if base is None:
        return config
    print(f"voiceassist ask: Asterisk is not installed here: answers, database and log go to {base}", file=sys.stderr)
    return load_full_config(explicit, overrides=moved)


def _work_as_service_user(args: argparse.Namespace) -> None:
    """Run as root, become the asterisk user before touching its files (spool, database, answers).

    What root alone can do is done first: a ``calls export --output`` file is opened as root (the
    admin's own choice of path) and becomes standard output.
    """
    import os

    from .system.privileges import SERVICE_USER, drop_privileges, service_account

    if os.geteuid() != 0 or service_account() is None:
        return  # not root, or no asterisk user to become (a development machine)
    if args.command == "calls" and getattr(args, "output", None):
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
        args.output = None
    if drop_privileges() and args.command == "ask" and not os.access(args.question, os.R_OK):
        raise VoiceAssistError(f"{args.question} is not readable by the {SERVICE_USER} user, who runs `ask` for root: "
                               f"copy it somewhere {SERVICE_USER} can read (e.g. /tmp) and run again")


def _system_command(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from .config import default_config_path

    config_path = Path(args.config or os.environ.get("VOICEASSIST_CONFIG") or default_config_path())
    if args.command == "doctor":
        from .admin.doctor import run_doctor

        return run_doctor(str(config_path), online=args.online, as_json=args.json)
    from .admin.install import run_install, run_uninstall

    if args.command == "install":
        return run_install(config_path=config_path, dry_run=args.dry_run, reload=not args.no_reload,
                           fastagi=args.fastagi)
    return run_uninstall(purge=args.purge, dry_run=args.dry_run, reload=not args.no_reload, config_path=config_path)


if __name__ == "__main__":
    sys.exit(main())
