"""The one exception tree of voiceassist.

::

    VoiceAssistError                   root; carries exit_code for the CLI
    ├── ConfigError                    a setting is missing or invalid; the message names it
    │   └── UntrustedFile              run as root: a config/knowledge file others could write
    ├── UnsafePath                     root was to write, chown or delete through a link or a
    │                                  file voiceassist did not make: refused
    ├── ProviderError                  a speech-to-text, chat or text-to-speech call failed
    │   ├── ProviderNotInstalled       the vendor SDK extra is not installed
    │   ├── ProviderAuthError          credentials missing or rejected (names the setting)
    │   ├── ProviderTimeout            no answer within the configured timeout
    │   │   └── TurnDeadlineExceeded   the turn's total time budget ran out (not retried)
    │   ├── ProviderRateLimited        429 after our retries (never retried on insufficient_quota)
    │   ├── ProviderUnavailable        5xx / connection refused after our retries
    │   ├── ProviderBadResponse        empty, blocked, truncated or unparsable result
    │   └── ProviderCannotAnswer       the knowledge file has no answer: the next chat model is asked
    ├── AudioError                     ffmpeg missing or failed, unreadable recording
    ├── StorageError                   the database could not be reached or written
    │   └── StorageRejected            it refused this record (bad value, constraint): retrying cannot help
    ├── RequestError                   a value from the call (AGI argument or environment) is invalid
    ├── CallerHungUp                   the caller is gone (on any channel: AGI, a media leg, ...)
    └── AGIError                       also a pyst2 ``AGIError``: the AGI conversation failed
        ├── AGIProtocolError           a line from Asterisk we cannot parse, or a line too long to send
        │   └── AGIEnvironmentRefused  a complete environment block refused for what it holds (forged?)
        ├── AGIInvalidCommand          510
        ├── AGIUsageError              520 (the usage text is kept)
        └── AGIHangup                  also CallerHungUp and a pyst2 ``AGIHangup``: the caller is gone
            ├── AGIDeadChannel         511: command not permitted on a dead channel
            └── AGIConnectionClosed    EOF on the AGI stream (Asterisk closed the socket/pipe)

SDK exceptions (google.api_core, requests, httpx2, openai) never leave a provider module:
each provider maps them onto the ``ProviderError`` branch.
"""

from __future__ import annotations

from asterisk import agi as _pyst2


class VoiceAssistError(Exception):
    """Root of every error voiceassist raises on purpose."""

    exit_code = 1


class ConfigError(VoiceAssistError):
    """A setting is missing or invalid. The message names the setting to fix."""

    exit_code = 2


class UntrustedFile(ConfigError):
    """Run as root, a file that names programs and paths root uses (the config, the knowledge
    file) could be written by someone other than root, or is a symbolic link. ``fix`` is the
    command line that makes it trustworthy."""

    def __init__(self, message: str, *, path: str, fix: str) -> None:
        super().__init__(f"{message}; fix: {fix}")
        self.path = path
        self.fix = fix


class UnsafePath(VoiceAssistError):
    """A path a root command was to write, chown or delete is a link, or is not the object
    voiceassist made (other owner or type): nothing was done to it."""


class ProviderError(VoiceAssistError):
    """A provider call failed. ``provider`` names it (e.g. ``gemini``)."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.provider = provider


class ProviderNotInstalled(ProviderError):
    """The provider's SDK is not installed (an optional extra)."""


class ProviderAuthError(ProviderError):
    """Credentials are missing or were rejected."""


class ProviderTimeout(ProviderError):
    """The provider did not answer within the configured timeout."""

    retryable = True


class TurnDeadlineExceeded(ProviderTimeout):
    """The whole turn's time budget (``[general] turn_deadline``) ran out; nothing more is tried."""

    retryable = False


class ProviderRateLimited(ProviderError):
    """The provider answered 429."""

    retryable = True


class ProviderUnavailable(ProviderError):
    """The provider answered 5xx or could not be reached."""

    retryable = True


class ProviderBadResponse(ProviderError):
    """The provider's answer was empty, blocked, truncated or unparsable."""


class ProviderCannotAnswer(ProviderError):
    """The provider has no answer to this question (the knowledge file does not cover it); the
    fallback chain asks the next chat model."""


class AudioError(VoiceAssistError):
    """Audio could not be read or converted."""


class StorageError(VoiceAssistError):
    """The database could not be reached or written."""


class StorageRejected(StorageError):
    """The database refused this record for a reason a retry will not fix (a value it will not
    take, a constraint); a spool replay sets the entry aside and goes on with the next one."""


class RequestError(VoiceAssistError):
    """A value from the call (an AGI argument or environment value) failed validation; the
    turn is not run on it. ``reason`` says which value and why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AGIError(VoiceAssistError, _pyst2.AGIError):  # type: ignore[misc]  # pyst2 has no types
    """The AGI conversation with Asterisk failed."""


class AGIProtocolError(AGIError):
    """Asterisk sent a line we cannot parse, or a command could not be sent safely."""


class AGIEnvironmentRefused(AGIProtocolError):
    """A complete environment block refused for its content: a value the turn relies on holds a
    line break, or data waits right after it (the real rest behind a block forged in a caller ID)."""


class AGIInvalidCommand(AGIError, _pyst2.AGIInvalidCommand):  # type: ignore[misc]
    """Asterisk answered 510 Invalid or unknown command."""


class AGIUsageError(AGIError, _pyst2.AGIUsageError):  # type: ignore[misc]
    """Asterisk answered 520 with the command's usage text."""

    def __init__(self, usage: str) -> None:
        super().__init__(f"invalid AGI command syntax; usage:\n{usage}")
        self.usage = usage


class AGIAppError(AGIError, _pyst2.AGIAppError):  # type: ignore[misc]
    """A command or application failed (result -1) while the channel is still up."""


class CallerHungUp(VoiceAssistError):
    """The caller hung up (whatever the channel: an AGI session, a media connection)."""


class AGIHangup(AGIError, CallerHungUp, _pyst2.AGIHangup):  # type: ignore[misc]
    """The caller hung up (SIGHUP, a HANGUP line, or a -1 result after hangup)."""


class AGIDeadChannel(AGIHangup):
    """Asterisk answered 511: command not permitted on a dead channel."""


class AGIConnectionClosed(AGIHangup):
    """Asterisk closed the AGI pipe or socket."""
