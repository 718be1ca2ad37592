"""The main job: a real call to 8008 on the rig's Asterisk 22, answered by voiceassist.

    python -m harness.rig.main_job [--live] [QUESTION.wav]

``--live``: the same call as a real-time conversation (the ``voiceassist-live`` route over
AudioSocket: no beep, the answer starts while the assistant listens).

Uses the local providers (no API key needed) unless cloud credentials are configured in the
environment (GOOGLE_APPLICATION_CREDENTIALS, GEMINI_API_KEY, OPENAI_API_KEY) or in the file named by
VOICEASSIST_CONFIG. The FastAGI server runs on this host; Asterisk runs in the rig's chroot.
Prints the transcript, the reply, per-stage timings, the answer audio and the database row.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from voiceassist.text.knowledge import SAMPLE_KNOWLEDGE

from .asterisk import SHARED, AsteriskRig, log
from .calls import QUESTIONS_DIR, RIG_DIALPLAN, place_call

LOCAL_PORT = 4574  # the [va-local] context of the rig's dialplan
# A caller's own words, not the knowledge file's ("What are your opening hours?"), and the start
# of the file's answer to it.
SAMPLE_QUESTION = "When are you open during the week?"
SAMPLE_ANSWER = "Monday to Friday from eight in the morning"


def main_job_conf() -> str:
    user = os.environ.get("VOICEASSIST_CONFIG")
    base = Path(user).read_text() if user else ""
    return base + f"""
; --- main job: data in the rig's shared directory ---
[general]
answer_dir = {SHARED}/spool/voiceassist
knowledge_file = {SAMPLE_KNOWLEDGE}
max_turns = 1

[database]
url = sqlite:///{SHARED}/voiceassist.db

[logging]
file = {SHARED}/voiceassist.log
"""


def prepare_question(source: str | None) -> str:
    QUESTIONS_DIR.mkdir(parents=True, exist_ok=True)
    target = QUESTIONS_DIR / "main-job.wav"
    if source:
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", source, "-ar", "8000", "-ac", "1",
                        "-acodec", "pcm_s16le", str(target)], check=True)
    else:
        raw = QUESTIONS_DIR / "main-job.espeak.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), SAMPLE_QUESTION], check=True)
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(target)], check=True)
        raw.unlink()
    return str(target.with_suffix(""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", help="your question as a WAV file (default: a spoken sample)")
    parser.add_argument("--live", action="store_true", help="a real-time call (AudioSocket) instead of the AGI flow")
    args = parser.parse_args(argv)
    rig = AsteriskRig()
    log("building or reusing the Asterisk 22 chroot")
    rig.build()
    rig.mount()
    server = None
    try:
        conf = SHARED / "main-job.conf"
        SHARED.mkdir(parents=True, exist_ok=True)
        conf.write_text(main_job_conf())
        rig.configure(conf.read_text(), RIG_DIALPLAN)
        question = prepare_question(args.question)
        log("starting Asterisk")
        rig.start()
        log("starting the FastAGI server (loading the providers' models)")
        server = subprocess.Popen([sys.executable, "-m", "voiceassist", "--config", str(conf), "serve",
                                   "--port", str(LOCAL_PORT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        assert server.stdout is not None
        for line in server.stdout:
            print(f"[serve] {line.rstrip()}", file=sys.stderr)
            if "listening" in line:
                break
        else:
            raise RuntimeError("the FastAGI server did not start")
        key = str(7000 + int(time.time()) % 1000)
        context = "va-live-local" if args.live else "va-local"
        log(f"calling 8008 (caller {key}) with {question}.wav{' in real time' if args.live else ''}")
        started = time.monotonic()
        call = place_call(rig, key, [question], context=context, listen=12 if args.live else 60, grace=5)
        call.wait(timeout=180)
        log(f"call finished in {time.monotonic() - started:.1f} s")
        with sqlite3.connect(SHARED / "voiceassist.db") as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM voiceassist_calls WHERE caller_number = ? ORDER BY id DESC",
                             (key,)).fetchone()
            turn = db.execute("SELECT * FROM voiceassist_turns WHERE call_id = ? ORDER BY turn_number",
                              (row["id"],)).fetchone()
        print()
        print(f"call         {row['uniqueid']} from {row['caller_number']} on {row['channel']}")
        print(f"providers    {turn['stt_provider']} -> {turn['llm_provider']} -> {turn['tts_provider']}")
        print(f"status       {turn['status']}" + (f" ({turn['error']})" if turn["error"] else ""))
        print(f"transcript   {turn['transcript']}")
        print(f"reply        {turn['reply']}")
        stages = ("recording", "stt", "llm_first", "llm", "tts", "convert", "first_audio", "speech_to_audio", "total")
        print("timings ms   " + "  ".join(f"{s} {turn[s + '_ms']}" for s in stages))
        if args.live:
            print(f"played       {turn['played_ms']} ms" + (" (interrupted)" if turn["interrupted"] else "")
                  + f"; end of speech to first audio {turn['speech_to_audio_ms']} ms; call ended: {row['end_state']}")
        else:
            print(f"answer audio {turn['answer_path']}")
        print(f"caller heard {call.heard_path}")
        print(f"database     {SHARED / 'voiceassist.db'} (voiceassist_calls id {row['id']}, voiceassist_turns id {turn['id']})")
        if not args.question:
            right = (turn["reply"] or "").startswith(SAMPLE_ANSWER)
            print(f"answer       {'correct' if right else 'WRONG'}: asked {SAMPLE_QUESTION!r}, "
                  f"the knowledge file answers {SAMPLE_ANSWER!r}...")
            return 0 if turn["status"] == "ok" and right else 1
        return 0 if turn["status"] == "ok" else 1
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        rig.stop()
        rig.unmount()


if __name__ == "__main__":
    sys.exit(main())
