"""Command line: ``voiceassist agi`` (process AGI), ``voiceassist serve`` (FastAGI)."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import VoiceAssistError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voiceassist", description="Asterisk/FreePBX voice assistant.")
    parser.add_argument("--version", action="version", version=f"voiceassist {__version__}")
    parser.add_argument("--config", help="config file (default $VOICEASSIST_CONFIG or /etc/asterisk/voiceassist.conf)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agi = commands.add_parser("agi", help="run one AGI session on stdin/stdout (Asterisk runs this)")
    agi.add_argument("args", nargs=argparse.REMAINDER, help="AGI() arguments (also read from agi_arg_N)")
    serve = commands.add_parser("serve", help="run the FastAGI server")
    serve.add_argument("--host", help="address to bind (default [fastagi] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default [fastagi] port, 4573)")
    serve.add_argument("--max-calls", type=int, help="concurrent calls before the busy prompt")
    ask = commands.add_parser("ask", help="run one turn on a recorded question, without Asterisk")
    ask.add_argument("question", help="the question: a WAV (or any audio file ffmpeg reads)")
    ask.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _print_ask(result: object, as_json: bool) -> None:
    import dataclasses
    import json

    data = dataclasses.asdict(result)  # type: ignore[call-overload]
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print(f"call        {data['uniqueid']}  status {data['status']}")
    print(f"transcript  {data['transcript']}")
    print(f"reply       {data['reply']}")
    if data["error"]:
        print(f"error       {data['error']}")
    print("timings ms  " + "  ".join(f"{k} {v}" for k, v in data["timings"].items()))
    print(f"answer      {data['answer_ulaw']}  (listen: {data['answer_wav']})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "agi":
        from .process_agi import run_process_agi

        return run_process_agi(args.config)
    try:
        from .assistant import Assistant
        from .config import load_config

        assistant = Assistant(load_config(args.config))
        if args.command == "serve":
            from .fastagi import serve

            serve(assistant, args.host, args.port, args.max_calls)
        elif args.command == "ask":
            from .ask import ask

            result = ask(assistant, args.question)
            _print_ask(result, args.json)
            return 0 if result.status == "ok" else 1
        return 0
    except VoiceAssistError as exc:
        print(f"voiceassist: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"voiceassist: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
