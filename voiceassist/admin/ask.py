"""``voiceassist ask QUESTION.wav``: one turn without Asterisk, for trying providers and prompts.

The same :class:`~voiceassist.call.turn.Turn` runs as on a call, on a
:class:`~voiceassist.call.channel.LocalChannel` instead of Asterisk. The answer is written as ``.ulaw`` (what Asterisk plays) and ``.wav`` (to listen to).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..audio.conversion import run_ffmpeg
from ..call.assistant import Assistant
from ..call.channel import LocalChannel
from ..call.requests import CallIdentity, TurnRequest, channel_language, validate_uniqueid
from ..call.turn import Turn
from ..config import DEFAULTS, Config
from ..errors import AudioError
from ..types import CallState


@dataclass
class AskResult:
    uniqueid: str
    status: str
    transcript: str
    reply: str
    error: str | None
    timings: dict[str, int]
    answer_ulaw: str | None
    answer_wav: str | None
    providers: dict[str, str | None] = field(default_factory=dict)  # which one answered, per capability
    config: str = ""  # the file the settings came from (or "built-in defaults")
    language: str = ""  # the configured language the turn was served in


def per_user_locations(config: Config, home: Path | None = None) -> tuple[Path | None, dict[str, dict[str, str]]]:
    """Where ``ask`` keeps its files on a machine without Asterisk: under the user's own data
    directory (``$XDG_DATA_HOME/voiceassist``) instead of creating Asterisk's directories.

    Returns that directory and the settings to override (only locations still at their built-in
    defaults move); ``(None, {})`` where Asterisk is installed."""
    if Path(config.section("general").get("answer_dir")).parent.is_dir() and Path("/etc/asterisk").is_dir():
        return None, {}
    base = Path(os.environ.get("XDG_DATA_HOME") or (home or Path.home()) / ".local" / "share") / "voiceassist"
    wanted = {("general", "answer_dir"): str(base / "answers"),
              ("database", "url"): f"sqlite:///{base / 'voiceassist.db'}",
              ("database", "spool_dir"): str(base / "spool"),
              ("logging", "file"): str(base / "voiceassist.log")}
    moved: dict[str, dict[str, str]] = {}
    for (section, key), location in wanted.items():
        if config.section(section).get(key) == DEFAULTS[section][key]:
            moved.setdefault(section, {})[key] = location
    return (base if moved else None), moved


def _to_phone_wav(source: Path, ffmpeg: str, directory: Path) -> Path:
    """Any audio file -> 8 kHz mono 16-bit WAV, as Asterisk's MixMonitor records it."""
    target = directory / "question.wav"
    try:
        run_ffmpeg(["-i", str(source), "-ar", "8000", "-ac", "1", "-acodec", "pcm_s16le", str(target)],
                   ffmpeg=ffmpeg, timeout=60)
    except AudioError as exc:
        raise AudioError(f"cannot read {source}: {exc}") from None
    return target


def ask(assistant: Assistant, question: Path, caller: str = "cli", language: str = "") -> AskResult:
    """Run one turn on ``question`` (any audio format ffmpeg reads) and store it; ``language``: the
    call's language as a channel's would be (de, es-ES ...; "": [general] language)."""
    ffmpeg = assistant.config.section("audio").get("ffmpeg")
    uniqueid = f"ask-{int(time.time())}.{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="voiceassist-ask-") as tmp:
        recording = _to_phone_wav(Path(question), ffmpeg, Path(tmp))
        # Built here, not parsed: the recording is our own converted copy, outside the answer
        # directory; the uniqueid still passes the check that makes it a safe directory name.
        request = TurnRequest(call=CallIdentity(uniqueid=validate_uniqueid(uniqueid), channel="voiceassist-ask",
                                                caller_number=caller, caller_name=caller, extension="ask",
                                                language=channel_language(language)),
                              recording=recording, turn_number=1, call_started=time.time())
        turn = Turn(LocalChannel(), assistant, request)
        turn.record.recording_path = str(question)
        turn.run()
    record = turn.record
    wav = None
    if record.answer_path:
        try:
            target = str(Path(record.answer_path).with_suffix(".wav"))
            run_ffmpeg(["-f", "mulaw", "-ar", "8000", "-ac", "1", "-i", record.answer_path, target],
                       ffmpeg=ffmpeg, timeout=60)
            wav = target
        except AudioError:
            pass  # the .ulaw answer stands; only the listening copy is missing
    try:
        assistant.journal().end_call(turn.call, CallState.DONE)
    except Exception:  # the turn itself already reported a storage problem
        pass
    return AskResult(uniqueid, record.status, record.transcript or "", record.reply or "", record.error,
                     dict(record.timings), record.answer_path, wav,
                     {"stt": record.stt_provider, "llm": record.llm_provider, "tts": record.tts_provider},
                     str(assistant.config.path or "built-in defaults"), turn.config.general.language)
