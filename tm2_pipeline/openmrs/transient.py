"""Which failed exchanges with OpenMRS can succeed later, and whether what they sent may still land.

Read from the HTTP answer (or the transport error) alone: the client raises what these decide.
"""

from __future__ import annotations

import httpx

from tm2_pipeline.openmrs.errors import TransientOpenMRSError
from tm2_pipeline.openmrs.responses import retry_after_seconds

# Answers that say "not processed, try later", on any method: a gateway's 502/503/504, and the 408
# and 429 that a gateway or rate limiter in front of OpenMRS sends (OpenMRS itself sends neither).
RETRY_LATER_STATUSES = frozenset({408, 429, 502, 503, 504})
# A gateway's answers after it passed the request on: OpenMRS may still be processing it.
_GATEWAY_GAVE_UP = frozenset({502, 504})
# Failures before a request left this machine: nothing can have reached OpenMRS.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def may_have_been_sent(error: httpx.TransportError) -> bool:
    """Whether OpenMRS may have received (and may still write) the request that failed so."""
    return not isinstance(error, _NOT_SENT)


def raise_if_transient(
    response: httpx.Response, method: str, what: str, *, server_error_is_transient: bool = False
) -> None:
    status = response.status_code
    if status in RETRY_LATER_STATUSES or (server_error_is_transient and status >= 500):
        raise TransientOpenMRSError(
            f"{what}: server answered {status}",
            method=method,
            status=status,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            in_doubt=status in _GATEWAY_GAVE_UP,
        )


def raise_if_webapp_missing(response: httpx.Response, method: str, what: str) -> None:
    """A 404 that is not OpenMRS's JSON error comes from the servlet container or a gateway: the
    webapp is not there for now (redeploying), which says nothing about the record. The login
    already proved the URL right."""
    if response.status_code != 404:
        return
    try:
        response.json()
    except ValueError:
        raise TransientOpenMRSError(
            f"{what}: answered 404 with a page, not OpenMRS's error (redeploying?)",
            method=method,
            status=404,
        ) from None
