"""What a datetime becomes in BSON, decided once so stored and in-memory timestamps compare equal."""

from __future__ import annotations

from datetime import UTC, datetime


def stored_timestamp(now: datetime) -> datetime:
    """`now` in UTC truncated to milliseconds (BSON's precision); naive datetimes are refused."""
    if now.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return now.astimezone(UTC).replace(microsecond=now.microsecond // 1000 * 1000)
