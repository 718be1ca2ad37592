"""Shared test helpers: config text pointing the real SDKs at the emulators."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from voiceassist.call.conversation import conversation_for
from voiceassist.config import Config, load_config
from voiceassist.types import Conversation, Exchange


def conf_text(emulators: dict, *, data_dir: Path, extra: str = "") -> str:
    speech_url, gemini_url, tts_url = (emulators[n].base_url for n in ("speech", "gemini", "tts"))
    return f"""; written by the tests
[general]
answer_dir = {data_dir}/spool/voiceassist
max_turns = 3

[google_speech]
endpoint = {speech_url}
credentials_file = anonymous
timeout = 2
retries = 1

[gemini]
api_key = test-gemini-key-123
base_url = {gemini_url}
timeout = 2
retries = 1

[openai]
api_key = sk-test-openai-key-456
base_url = {tts_url}/v1

[openai_tts]
timeout = 2
retries = 1

[openai_chat]
model = gpt-5-mini
timeout = 2
retries = 1

[openai_stt]
timeout = 2
retries = 1

[openai_realtime]
base_url = {emulators["realtime"].base_url}
timeout = 2
retries = 1

[google_tts]
endpoint = {emulators["google_tts"].base_url}
timeout = 2
retries = 1

[database]
url = sqlite:///{data_dir}/voiceassist.db
spool_dir = {data_dir}/db-spool
flush_interval = 1

[logging]
file = {data_dir}/voiceassist.log
level = DEBUG
{extra}
"""


def streaming_providers(speech_endpoint: str) -> str:
    """Config lines for a real-time call's providers: Google's streaming recogniser (its gRPC
    emulator at ``speech_endpoint``), Gemini, OpenAI speech."""
    return f"""
[stt]
provider = google_speech
[llm]
provider = gemini
[tts]
provider = openai_tts
[google_speech]
endpoint = {speech_endpoint}
"""


def config_for(emulators: dict, data_dir: Path, extra: str = "") -> Config:
    path = data_dir / "voiceassist.conf"
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(conf_text(emulators, data_dir=data_dir, extra=extra))
    return load_config(path, environ={})


def talk(config: Config, question: str, history: list[Exchange] | tuple[Exchange, ...] = ()) -> Conversation:
    """The conversation a turn would give a chat model for ``question`` (system prompt, knowledge, history)."""
    return conversation_for(config, history, question)


@contextmanager
def voiceassist_log() -> Iterator[Callable[[], str]]:
    """What the voiceassist logger says meanwhile (in-process servers: the log file is the first
    test's, logging being configured once per process)."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("voiceassist")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lambda: "\n".join(records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def rig_conf(emulators, extra: str = "") -> str:
    """The rig's voiceassist.conf: the emulators, data in the rig's shared directory."""
    from harness.rig.asterisk import SHARED

    return conf_text(emulators, data_dir=SHARED, extra=extra)
