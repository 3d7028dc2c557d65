"""Typed OpenMRS errors. Messages never carry a password, a patient identifier, a query string or a
response body (the configured base URL may appear: it names the server, nothing else)."""

from __future__ import annotations


class OpenMRSError(RuntimeError):
    """Base of every error the OpenMRS client raises on purpose."""


class OpenMRSNotRetryable(OpenMRSError):
    """Retrying cannot help (and, for credentials, would lock the account): fail without retries.

    The Dagster asset converts it into `dagster.Failure(description=str(error), allow_retries=False)`.
    """

    retryable = False


class OpenMRSConfigError(OpenMRSNotRetryable):
    """The client is configured in a way that cannot work or is unsafe (e.g. Basic auth over plain http)."""


class OpenMRSAuthError(OpenMRSNotRetryable):
    """OpenMRS refused the credentials or keeps ending the session.

    Never retry: seven failed logins lock the account for five minutes.
    """


class OpenMRSAccessError(OpenMRSNotRetryable):
    """Logged in, but the user lacks a privilege every record needs (403 on a lookup)."""


class TransientOpenMRSError(OpenMRSError):
    """A failure that can succeed later: connection error, timeout, 502/503/504, a 500 not yet written.

    `retry_after` is the server's Retry-After in seconds, when it sent one. `in_doubt`: the request
    may have reached OpenMRS and may still be processed (a timeout after sending, a cut connection,
    a gateway's 502/504), so what it writes can land after a look that did not find it.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        status: int | None = None,
        retry_after: float | None = None,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.status = status
        self.retry_after = retry_after
        self.in_doubt = in_doubt


class ClaimLapsed(Exception):
    """A claimed write waited for a request slot past its deadline and was not sent: the claim that
    allowed it may have run out meanwhile, so it must be taken again first (not an OpenMRS error)."""
