"""Google service-account credentials, shared by Speech, Text-to-Speech and Vertex AI."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import ProviderAuthError, ProviderError

_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def service_account_credentials(provider: str, credentials_file: str, hint: str) -> Any:
    """Credentials from ``credentials_file`` (else ``GOOGLE_APPLICATION_CREDENTIALS``).

    ``anonymous`` gives no credentials at all (local emulators). Every failure is one
    :class:`ProviderAuthError` line that names the file and the setting to fix.
    """
    if credentials_file.lower() == "anonymous":
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    path = credentials_file or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if not path:
        raise ProviderAuthError(f"{provider}: no credentials configured ({hint})", provider=provider)
    try:
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_file(path, scopes=_SCOPES)  # type: ignore[no-untyped-call]
    except FileNotFoundError:
        raise ProviderAuthError(f"{provider}: credentials file {path} does not exist ({hint})", provider=provider) from None
    except PermissionError:
        raise ProviderAuthError(f"{provider}: credentials file {path} is not readable by uid {os.getuid()} ({hint})",
                                provider=provider) from None
    except (ValueError, KeyError) as exc:
        raise ProviderAuthError(f"{provider}: credentials file {path} is not a service-account key: {exc} ({hint})",
                                provider=provider) from None


def create_client(provider: str, factory: Callable[..., Any], hint: str, **kwargs: Any) -> Any:
    """``factory(**kwargs)`` (a GAPIC client class); a credentials problem becomes one
    :class:`ProviderAuthError` line naming the setting, anything else a :class:`ProviderError`."""
    try:
        return factory(**kwargs)
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
        if "Credentials" in type(exc).__name__ or "credentials" in str(exc).lower():
            raise ProviderAuthError(f"{provider}: no usable credentials ({hint})", provider=provider) from None
        raise ProviderError(f"{provider}: cannot create client: {exc}", provider=provider) from None
