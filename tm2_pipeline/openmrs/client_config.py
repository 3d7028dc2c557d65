"""How the OpenMRS client connects and retries: the base URL rules, timeouts, TLS trust and what a
failed certificate means, the retry wait."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import certifi
import tenacity

from tm2_pipeline.openmrs.errors import OpenMRSConfigError

REST_PATH = "/ws/rest/v1"
FHIR_PATH = "/ws/fhir2/R4"
REST, FHIR = "rest", "fhir"  # which OpenMRS API conditions are written through (OPENMRS_API)
# Basic auth over plain http is tolerated only where the password cannot leave the machine.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def base_url_problem(base_url: str, *, allow_insecure: bool = False) -> str | None:
    """What is wrong with an OpenMRS base URL as such, or None: checked when settings load (before
    a file is read) and again by every ClientConfig (resources can be built without settings)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "OPENMRS_BASE_URL must look like https://host/openmrs"
    if parts.username or parts.password:
        # It would be shown wherever the URL is (the Dagster UI's resource page, the log).
        return "OPENMRS_BASE_URL must not contain credentials; set OPENMRS_USERNAME and OPENMRS_PASSWORD"
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS and not allow_insecure:
        return (
            f"refusing to send the OpenMRS password over plain http to {parts.hostname}; "
            "use https:// or set OPENMRS_ALLOW_INSECURE=true"
        )
    return None


@dataclass(frozen=True)
class ClientConfig:
    base_url: str  # the webapp root, e.g. https://host/openmrs
    username: str
    password: str = field(repr=False)
    concurrency: int = 8
    concept_source: str = "ICD-11-TM2"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 5  # per record and per login, within one run
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    allow_insecure: bool = False
    ca_bundle: str | None = None  # PEM file of a CA to trust besides the public ones (a hospital CA)
    # Items per page of a list; OpenMRS answers 500 above webservices.rest.maxResultsAbsolute (100).
    page_limit: int = 100
    api: str = REST  # conditions through the REST API, or FHIR2's Condition (lookups stay REST)

    def __post_init__(self) -> None:
        if self.api not in (REST, FHIR):
            raise OpenMRSConfigError(f"OPENMRS_API must be {REST!r} or {FHIR!r}, not {self.api!r}")
        if problem := base_url_problem(self.base_url, allow_insecure=self.allow_insecure):
            raise OpenMRSConfigError(problem)
        if not self.username or not self.password:
            raise OpenMRSConfigError(
                "OpenMRS needs a username and a password (OPENMRS_USERNAME, OPENMRS_PASSWORD)"
            )

    @property
    def server(self) -> str:
        """The webapp root as recorded in the submission log (no credentials, no query). A base URL
        given with the REST path (`.../openmrs/ws/rest/v1`, as API docs print it) means its root."""
        parts = urlsplit(self.base_url)
        path = parts.path.rstrip("/")
        if path.endswith(REST_PATH):
            path = path.removesuffix(REST_PATH)
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    def tls_verification(self) -> ssl.SSLContext | bool:
        """What httpx verifies server certificates with: its default (SSL_CERT_FILE / SSL_CERT_DIR when
        set, else the public CAs of certifi), plus `ca_bundle`."""
        if not self.ca_bundle:
            return True
        context = ssl.create_default_context(
            cafile=os.environ.get("SSL_CERT_FILE") or certifi.where(), capath=os.environ.get("SSL_CERT_DIR")
        )
        try:
            context.load_verify_locations(cafile=self.ca_bundle)
        except (OSError, ssl.SSLError) as error:
            raise OpenMRSConfigError(
                f"OPENMRS_CA_BUNDLE={self.ca_bundle!r} cannot be read as PEM certificates "
                f"({type(error).__name__})"
            ) from None
        return context

    @property
    def rest_base(self) -> str:
        return self.server + REST_PATH

    @property
    def fhir_base(self) -> str:
        return self.server + FHIR_PATH


_HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH


def certificate_problem(error: BaseException, host: str) -> str | None:
    """What is wrong with the server's certificate, when that is what failed a connection (no retry
    fixes it: it is configuration, not an outage), with the setting to change; else None."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, ssl.SSLCertVerificationError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    hint = (
        "use the host name the certificate was issued for in OPENMRS_BASE_URL"
        if seen.verify_code == _HOSTNAME_MISMATCH
        else "if a private CA signed it, set OPENMRS_CA_BUNDLE to that CA's PEM file"
    )
    return f"the TLS certificate of {host} is not accepted ({seen.verify_message}); {hint}"


class RetryAfterOrJitter(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, capped; a server's Retry-After (capped too) wins when present."""

    def __init__(self, initial: float, maximum: float, retry_after_max: float) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=initial, max=maximum)
        self._retry_after_max = retry_after_max

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, self._retry_after_max)
        return self._jitter(retry_state)
