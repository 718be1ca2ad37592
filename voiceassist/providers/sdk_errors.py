"""Map the exceptions the SDKs raise (their own, and the raw ``requests``/``httpx2`` ones they leak)
onto our :class:`~voiceassist.errors.ProviderError` tree, by class name and attributes, so that no
SDK has to be imported to recognise its errors."""

from __future__ import annotations

from ..errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

_TIMEOUT_NAMES = {"ReadTimeout", "ConnectTimeout", "Timeout", "TimeoutException", "APITimeoutError",
                  "DeadlineExceeded", "TimeoutError", "WriteTimeout", "PoolTimeout"}


def from_http_status(provider: str, status: int | None, message: str, *, hint: str = "") -> ProviderError:
    """Turn an HTTP status and message into the matching :class:`ProviderError`."""
    text = f"{provider}: {message}".strip()
    if status in (401, 403):
        return ProviderAuthError(f"{text} ({hint})" if hint else text, provider=provider)
    if status == 429:
        return ProviderRateLimited(text, provider=provider)
    if status == 408:
        return ProviderTimeout(text, provider=provider)
    if status is not None and status >= 500:
        return ProviderUnavailable(text, provider=provider)
    return ProviderError(text, provider=provider)


def _timeout(provider: str, exc: BaseException, names: set[str]) -> ProviderTimeout | None:
    if names & _TIMEOUT_NAMES:
        return ProviderTimeout(f"{provider}: no answer in time ({type(exc).__name__})", provider=provider)
    return None


def from_transport(provider: str, exc: BaseException) -> ProviderError | None:
    """Map a transport exception by class name, without importing the HTTP library."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    timeout = _timeout(provider, exc, names)
    if timeout is not None:
        return timeout
    if names & {"ConnectionError", "ConnectError", "APIConnectionError", "RemoteProtocolError",
                "ReadError", "ServiceUnavailable", "ChunkedEncodingError", "ProtocolError",
                "ConnectionClosed", "InvalidHandshake", "InvalidStatus", "OSError"}:
        return ProviderUnavailable(f"{provider}: connection failed ({type(exc).__name__}: {exc})", provider=provider)
    return None


def map_sdk_error(provider: str, exc: BaseException, *, hint: str = "") -> ProviderError:
    """Map any exception an SDK call raised onto our :class:`ProviderError` tree.

    Knows ``openai.APIStatusError`` (``status_code``/``code``), ``google.api_core`` and
    ``google.genai`` errors (integer ``code`` plus ``message``), refused HTTP responses (e.g.
    websockets' ``InvalidStatus`` for a WebSocket upgrade), and the transport errors of
    requests/httpx2/grpc/websockets by class name, so no SDK has to be imported here.
    """
    if isinstance(exc, ProviderError):
        return exc
    timeout = _timeout(provider, exc, {cls.__name__ for cls in type(exc).__mro__})
    if timeout is not None:
        return timeout
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):  # openai.APIStatusError
        code = getattr(exc, "code", None) or ""
        message = f"{status} {code} {getattr(exc, 'message', exc)}".replace("  ", " ")
        if status == 429 and code == "insufficient_quota":
            return ProviderError(f"{provider}: {message} (account out of credit; not retried)", provider=provider)
        return from_http_status(provider, status, message, hint=hint)
    code = getattr(exc, "code", None)
    if isinstance(code, int) and hasattr(exc, "message"):  # google.api_core / google.genai errors
        message = f"{code} {getattr(exc, 'status', '') or ''} {getattr(exc, 'message', '')}".replace("  ", " ")
        if code == 400 and "API key" in message:
            return ProviderAuthError(f"{provider}: API key rejected ({hint})", provider=provider)
        return from_http_status(provider, code, message, hint=hint)
    refused = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(refused, int):  # e.g. a WebSocket upgrade answered 401, 429 or 5xx
        return from_http_status(provider, refused, f"{refused}: request refused ({type(exc).__name__})", hint=hint)
    mapped = from_transport(provider, exc)
    return mapped or ProviderError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider)
