"""Map the exceptions the SDKs raise (their own, and the raw ``requests``/``httpx2`` ones they leak)."""

from __future__ import annotations

from ..errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)


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


def from_transport(provider: str, exc: BaseException) -> ProviderError | None:
    """Map a transport exception by class name, without importing the HTTP library."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ReadTimeout", "ConnectTimeout", "Timeout", "TimeoutException", "APITimeoutError",
                "DeadlineExceeded", "TimeoutError", "WriteTimeout", "PoolTimeout"}:
        return ProviderTimeout(f"{provider}: no answer in time ({type(exc).__name__})", provider=provider)
    if names & {"ConnectionError", "ConnectError", "APIConnectionError", "RemoteProtocolError",
                "ReadError", "ServiceUnavailable", "ChunkedEncodingError", "ProtocolError"}:
        return ProviderUnavailable(f"{provider}: connection failed ({type(exc).__name__}: {exc})", provider=provider)
    return None


def with_retries(call, *, provider: str, retries: int, first_delay: float = 0.2):  # type: ignore[no-untyped-def]
    """Run ``call()``; retry ``retries`` more times on retryable provider errors, with backoff.

    The SDKs' own retries are switched off by every provider: theirs are either absent, unbounded
    (Speech v1 retries for up to 5000 s) or retry errors that must not be retried.
    """
    import time

    delay = first_delay
    for attempt in range(retries + 1):
        try:
            return call()
        except ProviderError as exc:
            if not exc.retryable or attempt == retries:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")
