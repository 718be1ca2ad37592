"""Configuration: built-in defaults < ini file < ``VOICEASSIST_<SECTION>_<KEY>`` environment variables.

The file is ``/etc/voiceassist/voiceassist.conf`` (root:asterisk 0640, in a directory only root
can write) unless ``VOICEASSIST_CONFIG`` names another one; the old ``/etc/asterisk/voiceassist.conf``
is still read while the new one does not exist. Run as root, a file others could write is refused
(:mod:`voiceassist.system.trust`).
It is plain ini in Asterisk's style (``key = value`` or ``key => value``, ``;`` comments); Asterisk
templates and ``#include`` are not supported. The SDKs' own variables (``GOOGLE_APPLICATION_CREDENTIALS``,
``OPENAI_API_KEY``, ``GEMINI_API_KEY`` ...) are honoured by the provider registry when a key is not set here.

Every setting is declared once, in a frozen dataclass per section (below for the core sections,
beside each provider for its own), with its type, default and allowed values. :func:`load_config`
checks every value when the file is loaded (not when a call first uses it): a bad value is refused
with the key, the value and what is allowed, and an unknown key is reported as a warning.
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .system.trust import CONFIG_DIR, require_trusted_files

DEFAULT_CONFIG_PATH = CONFIG_DIR / "voiceassist.conf"
# Before 0.x the config lived in /etc/asterisk, which `fwconsole chown` hands to the asterisk user.
LEGACY_CONFIG_PATH = Path("/etc/asterisk/voiceassist.conf")
ENV_PREFIX = "VOICEASSIST_"


def default_config_path() -> Path:
    """The new location, or the old one while only the old one exists."""
    if not DEFAULT_CONFIG_PATH.exists() and LEGACY_CONFIG_PATH.exists():
        return LEGACY_CONFIG_PATH
    return DEFAULT_CONFIG_PATH

S = TypeVar("S")

# -- declaring settings -------------------------------------------------------------------------


def setting(default: Any, *, minimum: float | None = None, maximum: float | None = None,
            choices: Sequence[str] | None = None, pattern: str | None = None, secret: bool = False) -> Any:
    """A setting's default and what values it allows (checked by :func:`parse_section`).

    ``choices`` are compared case-insensitively and stored in lower case; for a tuple setting
    (a comma-separated list) they apply to each item. ``secret`` values are hidden from logs.
    """
    return field(default=default, metadata={"minimum": minimum, "maximum": maximum, "choices": choices,
                                            "pattern": pattern, "secret": secret})


def seconds(default: float) -> Any:
    """A timeout setting: seconds, from 0.1 to 600."""
    return setting(default, minimum=0.1, maximum=600.0)


def retries(default: int = 1) -> Any:
    """How often a failed request (429, 5xx, a timeout) is tried again: 0 to 10."""
    return setting(default, minimum=0, maximum=10)
# A language tag as the providers take it: en-US, de-DE, es, cmn-Hans-CN.
LANGUAGE_TAG = r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*"
OPTIONAL_LANGUAGE_TAG = rf"({LANGUAGE_TAG})?"


@dataclass(frozen=True)
class General:
    language: str = setting("en-US", pattern=LANGUAGE_TAG)
    # Other languages calls may be in. A call's channel language (CHANNEL(language): FreePBX's
    # Languages module sets it per inbound route, or VA_LANGUAGE before the Goto) picks one ("de"
    # or "de_DE" picks de-DE); a call in a language not listed is served in `language`. A setting
    # that differs for one language goes in [<section>.<language>], e.g. [llm.de-DE] system_prompt.
    languages: tuple[str, ...] = setting((), pattern=LANGUAGE_TAG)
    # Tell the caller's language from their first question (a recogniser that can: google_speech,
    # offered up to three of `languages` besides the call's) and go on in it: the answer, the
    # prompts (the call's CHANNEL(language) is changed) and the later questions.
    detect_language: bool = False
    max_turns: int = setting(5, minimum=1, maximum=100)
    max_call_seconds: int = setting(300, minimum=10, maximum=86400)
    # Sound names for Playback, relative to Asterisk's sounds directory (no extension).
    prompts: str = setting("custom/voiceassist", pattern=r"[^\s;,|&]+")
    # Per-call answer files; Asterisk must be able to read them.
    answer_dir: str = setting("/var/spool/asterisk/voiceassist", pattern=r"/.*")
    keep_recordings: bool = True
    # Longest question sent to speech-to-text, in seconds (Google's synchronous limit is 60 s).
    max_question_seconds: float = setting(55.0, minimum=1, maximum=600)
    # Channel variables VOICEASSIST_TRANSCRIPT / VOICEASSIST_REPLY are cut to this many characters.
    variable_max_chars: int = setting(1000, minimum=0, maximum=1800)
    # Facts for the assistant (text/markdown); its questions also guide the offline recogniser.
    knowledge_file: str = setting("", pattern=r"(/.*)?")
    # Seconds from the end of the caller's question to its first answer audio; past it the caller
    # hears the apology prompt instead of waiting on retries and fallbacks (0: no limit).
    turn_deadline: float = setting(15.0, minimum=0, maximum=300)
    # pipelined: stream the reply and play each sentence as soon as it is synthesized (the AGI
    # plays it with STREAM FILE); file: one answer file played by the dialplan's Playback.
    playback: str = setting("pipelined", choices=("pipelined", "file"))
    # A short summary of each call by the chat model, once the caller has gone: stored with the
    # call, sent with the call.ended event, remembered for the caller's next call ([memory]).
    call_summary: bool = False


# "auto": the cloud provider when its credentials are configured, else the local one.
# A comma-separated list is a fallback chain, tried in order: "openai, google, espeak".
# stt: google | openai | moonshine | pocketsphinx     llm: gemini | openai | knowledge | llama_cpp
# tts: openai | openai_realtime | google | piper | espeak
@dataclass(frozen=True)
class ProviderChoice:
    provider: tuple[str, ...] = setting(("auto",))


@dataclass(frozen=True)
class LLMChoice(ProviderChoice):
    system_prompt: str = (
        "You are a friendly assistant answering a telephone call. Reply in one to three short "
        "sentences of plain spoken language: no lists, no markdown, no emojis, no URLs.")
    # What the assistant says to a question its facts do not cover: every chat model is told to
    # say it rather than invent an answer, and the offline knowledge model says it.
    unknown_answer: str = setting(
        "I'm sorry, I don't know that. I can take a message, or put you through to someone who can help.",
        pattern=r"[^\x00-\x1f]{1,400}")


@dataclass(frozen=True)
class Audio:
    # auto: PCM answers are resampled in-process (soxr) and μ-law encoded (audioop): no ffmpeg
    # process per sentence; MP3 and the rest go through ffmpeg. ffmpeg: always ffmpeg.
    converter: str = setting("auto", choices=("auto", "ffmpeg"))
    ffmpeg: str = setting("ffmpeg", pattern=r"[^\s;|&$`]+")
    volume_gain_db: float = setting(0.0, minimum=-30, maximum=30)
    timeout: float = seconds(10.0)


@dataclass(frozen=True)
class Database:
    # sqlite:///path | freepbx (FreePBX's asteriskcdrdb, credentials from /etc/freepbx.conf) |
    # mysql://user:password@host/db | postgresql://user:password@host/db
    url: str = setting("sqlite:////var/lib/asterisk/voiceassist/voiceassist.db", secret=True)
    table_prefix: str = setting("voiceassist_", pattern=r"[A-Za-z][A-Za-z0-9_]{0,31}")
    freepbx_conf: str = setting("/etc/freepbx.conf", pattern=r"/.*")
    # Seconds a database connect, lock wait or statement may take; past it the turn is spooled.
    timeout: float = setting(3.0, minimum=0.5, maximum=60)
    # Turns the database could not take wait here (one file each) until replayed.
    spool_dir: str = setting("/var/spool/asterisk/voiceassist-spool", pattern=r"/.*")
    # Seconds between spool replays by the FastAGI server (0: only `voiceassist db flush`).
    flush_interval: float = setting(30.0, minimum=0, maximum=86400)


@dataclass(frozen=True)
class Privacy:
    # Days to keep stored calls and their turns, with their audio (`voiceassist db prune`, run
    # daily by the FastAGI server and the timer `voiceassist install` adds; 0: keep forever).
    retention_days: int = setting(365, minimum=0, maximum=36500)
    # Days to keep recordings and answer audio (0: as long as their call is kept).
    audio_retention_days: int = setting(30, minimum=0, maximum=36500)
    # Personal data replaced in stored transcripts and replies: none | all | card, email, phone
    redact: tuple[str, ...] = setting(("none",), choices=("none", "all", "card", "email", "phone"))


@dataclass(frozen=True)
class Logging:
    file: str = setting("/var/log/asterisk/voiceassist.log", pattern=r"(/.*)?")
    level: str = setting("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class FastAGI:
    host: str = setting("127.0.0.1", pattern=r"[0-9A-Za-z.:_-]+")
    port: int = setting(4573, minimum=1, maximum=65535)
    max_calls: int = setting(20, minimum=1, maximum=10000)
    # Processes sharing the port (each with its own SDK clients and max_calls / workers calls);
    # more than one uses more cores when many callers are answered at once.
    workers: int = setting(1, minimum=1, maximum=64)
    # Seconds to wait for Asterisk's answer to one AGI command.
    read_timeout: float = setting(120.0, minimum=1, maximum=3600)
    # Peers allowed to connect: addresses or networks (CIDR), comma-separated. A remote
    # Asterisk must be listed here (or a secret set) before `serve` binds a non-loopback address.
    allow: tuple[str, ...] = setting(("127.0.0.1", "::1"), pattern=r"[0-9A-Fa-f.:/]+")
    # Shared secret the dialplan sends in the AGI URL (agi://host:port/voiceassist?secret=...);
    # empty: none. `voiceassist install` writes the URL into the dialplan from these settings.
    secret: str = setting("", secret=True)


@dataclass(frozen=True)
class Live:
    """The real-time conversation (the ``voiceassist-live`` FastAGI route): the caller talks, the
    assistant answers while listening and can be interrupted."""

    # How Asterisk carries the call's audio to us: audiosocket (app_audiosocket, Asterisk 18+) or
    # websocket (chan_websocket: Asterisk 20.16, 21.11, 22.6 and later; JSON control since 22.8).
    transport: str = setting("audiosocket", choices=("audiosocket", "websocket"))
    # Who holds the conversation: cascade ([stt], [llm] and [tts], streamed), or a conversation
    # engine: ai_websocket (the business's own AI server, [ai_websocket]), openai_realtime (OpenAI's
    # speech-to-speech Realtime API, [openai_realtime]) or gemini_live (Gemini's Live API,
    # [gemini_live]). An engine that cannot be reached or fails mid-call hands the call to the cascade.
    engine: str = setting("cascade", choices=("cascade", "ai_websocket", "websocket", "openai_realtime",
                                              "gemini_live"))
    # Where `serve` listens for the media connections Asterisk opens (worker k of `serve` on port + k).
    host: str = setting("127.0.0.1", pattern=r"[0-9A-Za-z.:_-]+")
    audiosocket_port: int = setting(4575, minimum=1, maximum=65535)
    websocket_port: int = setting(4576, minimum=1, maximum=65535)
    # The websocket_client.conf section whose uri is ws://<host>:<websocket_port>/media.
    websocket_client: str = setting("voiceassist", pattern=r"[A-Za-z0-9_-]{1,64}")
    # The password of that section (HTTP Basic, user "voiceassist"); empty: none asked.
    websocket_password: str = setting("", secret=True)
    # Peers allowed to open a media connection: addresses or CIDR networks.
    allow: tuple[str, ...] = setting(("127.0.0.1", "::1"), pattern=r"[0-9A-Fa-f.:/]+")
    # 16 kHz audio where the transport and the phone's codec allow it (wideband phones); else 8 kHz.
    wideband: bool = True
    # Real-time calls at once (each also holds one of [fastagi] max_calls); beyond it callers hear busy.
    max_calls: int = setting(20, minimum=1, maximum=1000)
    max_call_seconds: int = setting(600, minimum=10, maximum=86400)
    # Seconds Asterisk has to open the media connection once the route asked for it.
    connect_timeout: float = setting(5.0, minimum=0.5, maximum=60)
    # Milliseconds without voice that end what the caller says (a shorter pause does not).
    end_silence_ms: int = setting(500, minimum=200, maximum=3000)
    max_utterance_seconds: float = setting(30.0, minimum=2, maximum=120)
    # Barge-in: the caller's voice stops the assistant (no: the assistant always finishes).
    barge_in: bool = True
    # Milliseconds of voice, within a little more, that count as the caller interrupting.
    barge_in_ms: int = setting(200, minimum=60, maximum=2000)
    # Quieter voice never interrupts (the assistant's own voice echoing back is quieter).
    barge_in_level_dbfs: float = setting(-35.0, minimum=-70, maximum=0)
    # Seconds after the caller stopped before "one moment" plays while the answer is not ready (0: never).
    filler_after: float = setting(1.5, minimum=0, maximum=30)
    # Seconds of caller silence before "are you still there?", then before goodbye.
    still_there_after: float = setting(8.0, minimum=2, maximum=120)
    goodbye_after: float = setting(6.0, minimum=2, maximum=120)


@dataclass(frozen=True)
class AIServer:
    """``voiceassist ai-server``: this assistant as the AI of another Asterisk connector, over the
    external-AI WebSocket protocol (the real-time conversation of [live] behind it)."""

    host: str = setting("127.0.0.1", pattern=r"[0-9A-Za-z.:_-]+")
    port: int = setting(8765, minimum=1, maximum=65535)
    # Connectors send "Authorization: Bearer <token>"; required when host is not loopback.
    token: str = setting("", secret=True)
    # Peers allowed to connect: addresses or CIDR networks.
    allow: tuple[str, ...] = setting(("127.0.0.1", "::1"), pattern=r"[0-9A-Fa-f.:/]+")
    max_sessions: int = setting(20, minimum=1, maximum=1000)


@dataclass(frozen=True)
class Web:
    """The web console (``voiceassist web``): calls, live transcripts, statistics and /metrics."""

    # serve also starts the console (as its own process); the voiceassist-web unit is the other way.
    enabled: bool = False
    host: str = setting("127.0.0.1", pattern=r"[0-9A-Za-z.:_-]+")
    port: int = setting(4580, minimum=1, maximum=65535)
    # Peers allowed to open a page: addresses or CIDR networks (a reverse proxy on this machine is loopback).
    allow: tuple[str, ...] = setting(("127.0.0.1", "::1"), pattern=r"[0-9A-Fa-f.:/]+")
    # A reverse proxy gives TLS (and the path, X-Forwarded-Prefix): its X-Forwarded-Proto/Host/Prefix
    # are believed, and the session cookie is Secure when the proxy says https.
    behind_proxy: bool = False
    # The console speaks plain HTTP; a bind beyond loopback needs this (or behind_proxy) said out loud.
    allow_plain_http: bool = False
    # Who may read /metrics (Prometheus): addresses or CIDR networks; never through the proxy.
    metrics_allow: tuple[str, ...] = setting(("127.0.0.1", "::1"), pattern=r"[0-9A-Fa-f.:/]+")
    # Console accounts (`voiceassist web adduser`): written by root, read by the console.
    users_file: str = setting("/etc/voiceassist/web-users", pattern=r"/.*")
    # Where calls tell the console what happens as it happens (a Unix datagram socket the console
    # binds; every call process, FastAGI, real-time or process AGI, sends to it).
    live_socket: str = setting("/run/voiceassist-web/live.sock", pattern=r"/.*")
    session_hours: float = setting(12.0, minimum=0.1, maximum=720)
    page_size: int = setting(50, minimum=5, maximum=500)
    # Failed logins per address (and per account) within 5 minutes before more are refused.
    max_login_failures: int = setting(5, minimum=1, maximum=100)
    # Live transcripts of calls between people on the PBX, started by an admin on the live page.
    transcribe_calls: bool = False
    # Asterisk's manager interface, to list the calls and start listening to one:
    # ami://user:secret@host:port, or freepbx (the login FreePBX keeps in /etc/freepbx.conf).
    manager: str = setting("freepbx", secret=True)
    # Where Asterisk sends the transcribed call's audio (AudioSocket), and who may connect there.
    transcribe_host: str = setting("127.0.0.1", pattern=r"[0-9A-Za-z.:_-]+")
    transcribe_port: int = setting(4590, minimum=0, maximum=65535)
    transcribe_allow: tuple[str, ...] = setting(("127.0.0.1", "::1"), pattern=r"[0-9A-Fa-f.:/]+")
    # What both parties hear when the transcript starts (e.g. where the law asks that both know):
    # an Asterisk sound name (custom/transcribed-notice: its 8 kHz .wav or .ulaw) or a file's path.
    transcribe_announcement: str = setting("", pattern=r"[A-Za-z0-9_./-]{0,255}")


@dataclass(frozen=True)
class Email:
    """E-mail about calls through the local mail server (``voiceassist.call.mail``)."""

    # Who gets them (comma-separated); none: no e-mail.
    to: tuple[str, ...] = setting((), pattern=r"[^@\s,<>]+@[^@\s,<>]+")
    sender: str = setting("voiceassist@localhost", pattern=r"[^@\s,<>]+@[^@\s,<>]+")
    # messages: when the caller left one; all: every call (with its summary and conversation).
    send: str = setting("messages", choices=("messages", "all"))
    smtp_host: str = setting("localhost", pattern=r"[0-9A-Za-z.:_-]+")
    smtp_port: int = setting(25, minimum=1, maximum=65535)
    timeout: float = seconds(10.0)
    subject_prefix: str = "[voiceassist]"


@dataclass(frozen=True)
class Memory:
    """Callers remembered (opt-in): what a caller's earlier calls were about is given to the model,
    found by caller number. Withheld and anonymous numbers are never matched."""

    enabled: bool = False
    # How far back, and how many earlier calls at most.
    days: int = setting(30, minimum=1, maximum=3650)
    calls: int = setting(3, minimum=1, maximum=20)


@dataclass(frozen=True)
class Tools:
    """The business's own HTTP tools the model may call (``voiceassist.call.tools``)."""

    # A JSON file {"tools": [{name, description, parameters, method, url, headers, timeout}]}; "": none.
    file: str = setting("", pattern=r"(/.*)?")
    # Tool calls one answer may make; past it the caller hears an apology.
    max_calls_per_turn: int = setting(3, minimum=1, maximum=10)
    # Characters of a tool's answer given to the model.
    max_response_chars: int = setting(2000, minimum=100, maximum=20000)


# What a call tells the admin's own systems (voiceassist.events).
EVENT_TYPES = ("call.started", "turn.completed", "call.transferred", "message.taken", "call.ended")


@dataclass(frozen=True)
class Webhooks:
    """``[webhooks]``: where the events of calls are POSTed."""

    # Where events are POSTed (http:// or https://), comma-separated; none: no webhooks.
    urls: tuple[str, ...] = setting((), pattern=r"https?://[^\s/?#]+\S*")
    # HMAC-SHA256 key every request is signed with (X-Voiceassist-Signature).
    secret: str = setting("", secret=True)
    events: tuple[str, ...] = setting(EVENT_TYPES, choices=EVENT_TYPES)
    # Seconds per delivery attempt.
    timeout: float = seconds(5.0)
    # An event not delivered by then goes to rejected/ in the outbox, with the reason.
    max_age_hours: float = setting(24.0, minimum=0.01, maximum=24 * 30)
    outbox_dir: str = setting("/var/spool/asterisk/voiceassist-outbox", pattern=r"/.*")
    # Asked when a call starts (call.started, signed, answered at once): a JSON object of facts
    # about the caller (name, account, notes) for the model; "": none.
    lookup_url: str = setting("", pattern=r"(https?://[^\s/?#]+\S*)?")
    # Seconds the lookup may take; past it the call goes on without the facts.
    lookup_timeout: float = setting(0.8, minimum=0.1, maximum=5)


# A transfer target as FreePBX writes destinations: context,extension,priority (the priority may be
# a number or a label). Only dialplan-safe characters: it ends up in Dial(Local/...) and Goto().
DIALPLAN_TARGET = r"[A-Za-z0-9_-]{1,64},[A-Za-z0-9_*#+-]{1,40},[A-Za-z0-9_-]{1,20}"
# The name of a destination, as the model and the caller see it.
DESTINATION_NAME = r"[a-z][a-z0-9_]{0,31}"


@dataclass(frozen=True)
class Actions:
    """What the assistant may do besides answering (``voiceassist.call.actions``): transfer the
    caller to one of ``[destinations]``, take a message, end the call."""

    # The destination for "a person" (the key 0, and the offline phrases below); "": none.
    operator: str = setting("", pattern=rf"({DESTINATION_NAME})?")
    # Where a transfer that fails (busy, no answer) goes: a destination name; "": back to the assistant.
    fallback: str = setting("", pattern=rf"({DESTINATION_NAME})?")
    # Seconds a transfer rings before it counts as not answered.
    ring_seconds: int = setting(30, minimum=5, maximum=300)
    # Words in what the caller says that ask for the operator without asking the model (so the
    # offline assistant transfers too); "": none.
    transfer_phrases: tuple[str, ...] = setting(
        ("operator", "a person", "a human", "a real person", "someone", "somebody", "receptionist",
         "an agent", "a representative"), pattern=r"[A-Za-z' ]{2,40}")
    # The model may end the call when the caller is done.
    end_call: bool = True
    # The caller may leave a message: voicemail (Asterisk's VoiceMail to voicemail_box), record (we
    # record and transcribe it with the call), or no.
    take_message: str = setting("no", choices=("no", "voicemail", "record"))
    # The mailbox messages go to with take_message = voicemail: box@context (FreePBX: 100@default).
    voicemail_box: str = setting("", pattern=r"([0-9A-Za-z_-]{1,40}(@[0-9A-Za-z_-]{1,40})?)?")
    # Keys during prompts and answers (AGI flow and real-time): the operator, repeat the last
    # answer, skip to the next question. "": the key does nothing.
    key_operator: str = setting("0", pattern=r"[0-9*#]?")
    key_repeat: str = setting("*", pattern=r"[0-9*#]?")
    key_skip: str = setting("#", pattern=r"[0-9*#]?")
    # A real-time call: other keys are told to the model ("the caller pressed 3"), e.g. for a menu
    # the system prompt describes.
    keys_to_model: bool = False


@dataclass(frozen=True)
class Destination:
    name: str
    target: str          # context,extension,priority
    description: str     # what the model reads to choose it


@dataclass(frozen=True)
class Destinations:
    """``[destinations]``: ``name = context,extension,priority | description`` per line, e.g.
    ``sales = from-internal,201,1 | The sales team: quotes and new orders``. The assistant can
    transfer to these names only."""

    entries: tuple[Destination, ...] = ()

    # Free keys: each key is a destination name (see parse_section).
    FREE_KEYS = True

    @classmethod
    def parse(cls, name: str, raw: Mapping[str, str], source: str) -> tuple[Destinations, list[str]]:
        entries, problems = [], []
        for key, value in raw.items():  # in the file's order: the order the model and caller hear
            target, _, description = (part.strip() for part in value.partition("|"))
            if not re.fullmatch(DESTINATION_NAME, key):
                problems.append(f"[{name}] {key} (in {source}): a destination name must be lower-case letters, "
                                f"digits and _, starting with a letter")
            elif not re.fullmatch(DIALPLAN_TARGET, target):
                problems.append(f"[{name}] {key} = {value!r} (in {source}) must be context,extension,priority "
                                f"| description (e.g. from-internal,201,1 | The sales team)")
            else:
                entries.append(Destination(key, target, description or key.replace("_", " ")))
        return cls(tuple(entries)), problems

    def get(self, name: str) -> Destination | None:
        return next((entry for entry in self.entries if entry.name == name), None)


# The sections every part of voiceassist reads. Each provider's own section is declared beside the
# provider (voiceassist/providers); ``providers.sections()`` gives them all, in the template's order.
CORE_SECTIONS: dict[str, type] = {
    "general": General, "stt": ProviderChoice, "llm": LLMChoice, "tts": ProviderChoice, "audio": Audio,
    "database": Database, "privacy": Privacy, "fastagi": FastAGI, "live": Live, "actions": Actions,
    "destinations": Destinations, "tools": Tools, "webhooks": Webhooks, "memory": Memory, "email": Email,
    "ai_server": AIServer, "web": Web, "logging": Logging,
}


# Sections that cannot differ per language ([<section>.<language>]): the machine's listeners,
# storage, logging and what is sent elsewhere are the same for every call.
NOT_PER_LANGUAGE = frozenset({"database", "privacy", "fastagi", "live", "ai_server", "web", "logging",
                              "webhooks", "email", "memory"})
_LANGUAGE_SECTION = re.compile(rf"(?P<base>[a-z_]+)\.(?P<tag>{LANGUAGE_TAG})")


# -- reading settings ---------------------------------------------------------------------------

_TRUE = {"1", "yes", "true", "on", "y"}
_FALSE = {"0", "no", "false", "off", "n", ""}


def _as_text(value: Any) -> str:
    """A default as the ini file would spell it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def defaults(sections: Mapping[str, type]) -> dict[str, dict[str, str]]:
    """Every setting of ``sections`` and its default as text (what a file without that key means)."""
    return {name: {} if getattr(cls, "FREE_KEYS", False) else {f.name: _as_text(f.default) for f in dataclasses.fields(cls)}
            for name, cls in sections.items()}


DEFAULTS = defaults(CORE_SECTIONS)


def _allowed(meta: Mapping[str, Any], kind: str) -> str:
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None and high is not None:
        return f"{kind} from {low:g} to {high:g}"
    if low is not None:
        return f"{kind} of at least {low:g}"
    return kind


def _convert(raw: str, hint: Any, meta: Mapping[str, Any]) -> Any:
    """``raw`` as the type ``hint`` with ``meta``'s limits; raises ValueError with what is allowed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: empty means None
        if raw == "":
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    choices = meta.get("choices")
    if typing.get_origin(hint) is tuple:
        items = tuple(item.strip() for item in raw.split(",") if item.strip())
        if not items:
            raise ValueError("a comma-separated list (not empty)")
        return tuple(_convert(item, str, meta) for item in items)
    if hint is bool:
        word = raw.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("yes or no")
    if hint is int:
        try:
            number: float = int(raw)
        except ValueError:
            raise ValueError(_allowed(meta, "a whole number")) from None
    elif hint is float:
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(_allowed(meta, "a number")) from None
        if not math.isfinite(number):
            raise ValueError(_allowed(meta, "a finite number"))
    else:
        if choices is not None:
            if raw.lower() not in choices:
                raise ValueError("one of " + ", ".join(choices))
            return raw.lower()
        pattern = meta.get("pattern")
        if pattern is not None and not re.fullmatch(pattern, raw):
            raise ValueError("a value of the form " + pattern)
        return raw
    low, high = meta.get("minimum"), meta.get("maximum")
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(_allowed(meta, "a whole number" if hint is int else "a number"))
    return number


def parse_section(cls: type[S], name: str, raw: Mapping[str, str], source: str) -> tuple[S, list[str], list[str]]:
    """The typed settings of section ``name`` from its raw text values.

    Returns the settings (a bad value replaced by its default), the problems (one line each:
    section, key, value, what is allowed, where it came from) and the unknown keys.
    """
    if getattr(cls, "FREE_KEYS", False):  # every key is an entry (e.g. [destinations])
        parsed, entry_problems = cls.parse(name, raw, source)  # type: ignore[attr-defined]
        return parsed, entry_problems, []
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if spec.name not in raw:
            continue
        text = raw[spec.name].strip()
        if text == "" and spec.default == ():  # a list that may be empty: its default is
            values[spec.name] = ()
            continue
        try:
            values[spec.name] = _convert(text, hints[spec.name], spec.metadata)
        except ValueError as allowed:
            shown = "***" if spec.metadata.get("secret") else repr(text)
            problems.append(f"[{name}] {spec.name} = {shown} (in {source}) must be {allowed}")
    known = {spec.name for spec in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - known)
    return cls(**values), problems, unknown


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
    """The merged configuration. Use :func:`load_config` to build one.

    ``problems`` lists the values that were refused (each replaced by its default); a config with
    problems comes only from ``load_config(..., strict=False)``, which process AGI uses so that a
    caller still hears the apology and the turn is stored with the problem. ``warnings`` names
    unknown keys and sections.
    """

    sections: Mapping[str, Mapping[str, str]]
    path: Path | None = None
    env_overrides: tuple[str, ...] = field(default=())
    typed: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    # [<section>.<language>]: per language tag (lower case), the settings that differ for its calls.
    overlays: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    def language_for(self, channel_language: str) -> str:
        """The configured language a call whose channel language is ``channel_language`` (Asterisk's
        CHANNEL(language): en, de, de_DE, es-MX) is served in: the listed tag spelled the same,
        else the first listed one of the same language, else ``[general] language``."""
        general = self.general
        listed = (general.language, *general.languages)
        wanted = channel_language.replace("_", "-").lower()
        if not re.fullmatch(LANGUAGE_TAG, wanted):
            return general.language
        for tag in listed:
            if tag.lower() == wanted:
                return tag
        for tag in listed:
            if tag.lower().split("-")[0] == wanted.split("-")[0]:
                return tag
        return general.language

    def language_sections(self, tag: str) -> Mapping[str, Mapping[str, str]]:
        """The ``[<section>.<tag>]`` sections' settings by section (the tag's case does not matter)."""
        return self.overlays.get(tag.lower(), {})

    def for_language(self, tag: str) -> Config:
        """This configuration as a call in language ``tag`` sees it: ``[general] language`` is
        ``tag`` and the settings of its ``[<section>.<tag>]`` sections win."""
        if tag == self.general.language and not self.language_sections(tag):
            return self
        merged = {name: dict(values) for name, values in self.sections.items()}
        changed = {"general"}
        for base, values in self.language_sections(tag).items():
            merged.setdefault(base, {}).update(values)
            changed.add(base)
        merged["general"]["language"] = tag
        typed = dict(self.typed)
        source = str(self.path) if self.path else "built-in defaults"
        for name in changed & typed.keys():
            typed[name] = parse_section(type(typed[name]), name, merged[name], source)[0]
        return dataclasses.replace(self, sections=merged, typed=typed)

    def section(self, name: str) -> Section:
        source = str(self.path) if self.path else "built-in defaults"
        return Section(name, self.sections.get(name, {}), source)

    def __getitem__(self, name: str) -> Section:
        return self.section(name)

    def settings(self, name: str) -> Any:
        """The typed, checked settings of section ``name`` (a dataclass of :data:`SECTIONS`)."""
        return self.typed[name]

    # The core sections, typed: what a call reads (never the raw text in the middle of a call).
    @property
    def general(self) -> General:
        return self.typed["general"]  # type: ignore[no-any-return]

    @property
    def llm(self) -> LLMChoice:
        return self.typed["llm"]  # type: ignore[no-any-return]

    @property
    def audio(self) -> Audio:
        return self.typed["audio"]  # type: ignore[no-any-return]

    @property
    def database(self) -> Database:
        return self.typed["database"]  # type: ignore[no-any-return]

    @property
    def privacy(self) -> Privacy:
        return self.typed["privacy"]  # type: ignore[no-any-return]

    @property
    def fastagi(self) -> FastAGI:
        return self.typed["fastagi"]  # type: ignore[no-any-return]

    @property
    def live(self) -> Live:
        return self.typed["live"]  # type: ignore[no-any-return]

    @property
    def ai_server(self) -> AIServer:
        return self.typed["ai_server"]  # type: ignore[no-any-return]

    @property
    def actions(self) -> Actions:
        return self.typed["actions"]  # type: ignore[no-any-return]

    @property
    def destinations(self) -> Destinations:
        return self.typed["destinations"]  # type: ignore[no-any-return]

    @property
    def tools(self) -> Tools:
        return self.typed["tools"]  # type: ignore[no-any-return]

    @property
    def webhooks(self) -> Webhooks:
        return self.typed["webhooks"]  # type: ignore[no-any-return]

    @property
    def email(self) -> Email:
        return self.typed["email"]  # type: ignore[no-any-return]

    @property
    def memory(self) -> Memory:
        return self.typed["memory"]  # type: ignore[no-any-return]

    @property
    def web(self) -> Web:
        return self.typed["web"]  # type: ignore[no-any-return]

    @property
    def logging(self) -> Logging:
        return self.typed["logging"]  # type: ignore[no-any-return]


def _unknown_destinations(typed: Mapping[str, Any], source: str) -> list[str]:
    """``[actions]`` settings that name a destination ``[destinations]`` does not list."""
    actions, destinations = typed.get("actions"), typed.get("destinations")
    if actions is None or destinations is None:
        return []
    listed = ", ".join(entry.name for entry in destinations.entries) or "none"
    return [f"[actions] {key} = {value} (in {source}) is not in [destinations] (listed: {listed})"
            for key in ("operator", "fallback") if (value := getattr(actions, key)) and not destinations.get(value)]


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
    strict: bool = True,
    sections: Mapping[str, type] | None = None,
) -> Config:
    """Load and check the configuration.

    Args:
        path: the ini file; default ``$VOICEASSIST_CONFIG`` or :func:`default_config_path`.
            A missing default file is fine (built-in defaults apply); a missing explicit file is an error.
        environ: environment to read ``VOICEASSIST_*`` overrides from (default ``os.environ``).
        overrides: values that win over everything (used by the CLI and tests).
        strict: refuse bad values (default). With ``strict=False`` they are replaced by their
            defaults and listed in :attr:`Config.problems`.
        sections: the sections to check (default the core ones; the entry points pass every
            provider's too, through ``providers.load_full_config``). Only with the whole set is a
            section nobody reads reported as unknown.

    Raises:
        ConfigError: the file cannot be read or parsed, or (strict) a value is not allowed; the
            message names every such value, one per line. ``UntrustedFile`` when run as root and
            the file or its knowledge file could be written by others.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get(ENV_PREFIX + "CONFIG"))
    file_path = Path(path or environ.get(ENV_PREFIX + "CONFIG") or default_config_path())
    complete = sections is not None
    sections = CORE_SECTIONS if sections is None else sections
    section_defaults = defaults(sections)
    merged: dict[str, dict[str, str]] = {name: dict(values) for name, values in section_defaults.items()}
    from_file: dict[str, set[str]] = {}

    overlays: dict[str, dict[str, dict[str, str]]] = {}
    spelled: dict[str, str] = {}
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
            raise ConfigError(f"config file {file_path} cannot be parsed: {' '.join(str(exc).split())}") from None
        for name in parser.sections():
            items = {k: v.strip() for k, v in parser.items(name)}
            # [<section>.<language>]; with only the core sections known (complete is False), a
            # provider's too: it is checked where the provider's settings are read.
            if (per_language := _LANGUAGE_SECTION.fullmatch(name)) and (per_language["base"] in sections
                                                                        or not complete):
                tag = per_language["tag"]
                spelled.setdefault(tag.lower(), tag)  # how the admin wrote it, for the messages
                overlays.setdefault(tag.lower(), {}).setdefault(per_language["base"], {}).update(items)
                continue
            merged.setdefault(name, {}).update(items)
            from_file.setdefault(name, set()).update(items)
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
    for language_sections in overlays.values():
        require_trusted_files(None, language_sections.get("general", {}).get("knowledge_file", ""))

    source = str(used_path) if used_path else "built-in defaults"
    typed: dict[str, Any] = {}
    problems: list[str] = []
    warnings: list[str] = []
    for name, values in merged.items():
        cls = sections.get(name)
        if cls is None:
            if complete:
                warnings.append(f"unknown section [{name}] in {source} (ignored)")
            continue
        typed[name], refused, unknown = parse_section(cls, name, values, source)
        problems += refused
        warnings += [f"unknown setting [{name}] {key} in {source} (ignored; a typo?)" for key in unknown]
    problems += _unknown_destinations(typed, source)
    problems += _check_overlays(overlays, spelled, merged, sections, typed, source, warnings)
    webhooks = typed.get("webhooks")
    if webhooks is not None and (webhooks.urls or webhooks.lookup_url) and not webhooks.secret:
        problems.append(f"[webhooks] secret (in {source}) must be set when [webhooks] urls is: every request is signed")
    if problems:
        if strict:
            raise ConfigError("\n".join(problems))
        # What the checked settings hold: a refused value is its default here too.
        for name, cls in sections.items():
            merged[name].update({spec.name: section_defaults[name][spec.name] for spec in dataclasses.fields(cls)
                                 if any(p.startswith(f"[{name}] {spec.name} = ") for p in problems)})
    return Config(merged, used_path, tuple(sorted(applied)), typed, tuple(problems), tuple(warnings), overlays)


def _check_overlays(overlays: dict[str, dict[str, dict[str, str]]], spelled: Mapping[str, str],
                    merged: Mapping[str, Mapping[str, str]],
                    sections: Mapping[str, type], typed: Mapping[str, Any], source: str,
                    warnings: list[str]) -> list[str]:
    """The problems of the ``[<section>.<language>]`` sections (each checked as its section with
    those settings); a refused setting is dropped from its section, so the section's own applies."""
    problems: list[str] = []
    general = typed.get("general")
    listed = {tag.lower() for tag in (general.language, *general.languages)} if general else set()
    for key, per_section in overlays.items():
        tag = spelled.get(key, key)
        if key not in listed:
            warnings.append(f"[...{tag}] sections in {source}: {tag} is not [general] language or in "
                            "[general] languages, so no call uses them")
        for base, values in per_section.items():
            name = f"{base}.{tag}"
            if base in NOT_PER_LANGUAGE:
                problems.append(f"[{name}] (in {source}): [{base}] is the same for every language")
                values.clear()
                continue
            if base == "general":  # the section's name says which language
                values.pop("language", None)
                values.pop("languages", None)
            if base not in sections:
                continue  # a provider's section, checked when its settings are read
            _, refused, unknown = parse_section(sections[base], name, {**merged[base], **values}, source)
            problems += refused
            warnings += [f"unknown setting [{name}] {key} in {source} (ignored; a typo?)" for key in unknown]
            for problem in refused:
                values.pop(problem.split(" = ", 1)[0].split("] ", 1)[-1], None)
    return problems
