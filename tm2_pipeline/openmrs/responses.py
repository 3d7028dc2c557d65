"""Reading OpenMRS answers: error messages (sanitized), duplicate detection, Retry-After, HTML pages.

Pure functions over status, headers and body text, so they are tested without a server; and what a
condition write answered (`WriteResult`).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote_plus

MAX_MESSAGE = 200
_DUPLICATE = re.compile(r"duplicate|constraint|unique", re.IGNORECASE)
# Long digit runs (ABHA numbers, phone numbers, MRN digits) and e-mail addresses never reach the log.
_DIGIT_RUN = re.compile(r"\d[\d -]{5,}\d")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_TAG = re.compile(r"<[^>]+>")
# Each round undoes one layer of encoding; a text still changing after this many is left as it is.
_DECODING_ROUNDS = 10


def error_message(body_text: str) -> str:
    """The human part of an OpenMRS error body: `error.message` plus field errors, a FHIR
    OperationOutcome's diagnostics, or the HTML page's text."""
    try:
        body = json.loads(body_text)
    except ValueError:
        return _TAG.sub(" ", body_text)
    if not isinstance(body, dict):
        return ""
    if body.get("resourceType") == "OperationOutcome":  # FHIR's errors
        issues = [issue for issue in body.get("issue") or [] if isinstance(issue, dict)]
        return "; ".join(str(issue.get("diagnostics") or issue.get("code") or "") for issue in issues)
    error = body.get("error")
    if not isinstance(error, dict):
        return str(body.get("message", ""))
    parts = [str(error.get("message", ""))]
    for field, problems in (error.get("fieldErrors") or {}).items():
        for problem in problems or []:
            parts.append(f"{field}: {problem.get('message', '')}")
    parts.extend(str(problem.get("message", "")) for problem in error.get("globalErrors") or [])
    return "; ".join(part for part in parts if part)


def sanitize(message: str, *, secrets: tuple[str, ...] = ()) -> str:
    """One short line without identifiers: known secrets removed, digit runs and e-mails masked.

    An echoed request (a gateway's error page) can carry a secret percent-encoded (`%2C` or `%2c`,
    `+` for a space), HTML-escaped (`&quot;`), re-cased or with its spaces run together, so secrets
    are looked for in the decoded message, without case. A message that echoes one is shown
    decoded, with it cut out; any other is shown as it came.
    """
    text = " ".join(message.split())
    if secrets:
        text = _without_secrets(text, secrets)
    text = _EMAIL.sub("[redacted]", text)
    text = _DIGIT_RUN.sub("[redacted]", text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def server_message(body_text: str, *, secrets: tuple[str, ...] = ()) -> str:
    return sanitize(error_message(body_text), secrets=secrets)


def _without_secrets(text: str, secrets: tuple[str, ...]) -> str:
    forms: set[str] = set()
    for secret in secrets:
        plain = " ".join(_decoded(secret).split())
        # An HTML page's tags are stripped before this (error_message): so is an id's "<...>".
        forms |= {plain, " ".join(_TAG.sub(" ", plain).split())}
    forms.discard("")
    if not forms:
        return text
    # Longest first: a shorter secret never cuts into a longer one.
    pattern = re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True))), re.IGNORECASE)
    decoded = " ".join(_decoded(text).split())
    return pattern.sub("[redacted]", decoded) if pattern.search(decoded) else text


def _decoded(text: str) -> str:
    """Percent-encoding and HTML escapes undone, layered ones too (until nothing changes)."""
    for _ in range(_DECODING_ROUNDS):
        decoded = html.unescape(unquote_plus(text))
        if decoded == text:
            break
        text = decoded
    return text


def is_duplicate_error(body_text: str) -> bool:
    """A 500 that speaks of a duplicate / constraint violation: the uuid is probably already there."""
    return bool(_DUPLICATE.search(error_message(body_text)))


def is_session_timeout(body_text: str) -> bool:
    return "session timed out" in body_text.lower()


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class WriteResult:
    """The answer to a condition write that was not a transient failure."""

    status: int
    body: dict[str, Any] | None
    message: str

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)
