"""What to do with one record, from its submission-log entry alone (pure; the heart of exactly-once).

- never sent to this server                   -> CREATE: one POST /condition with the record's uuid
- confirmed, same content                     -> SKIP: nothing is sent
- confirmed, content changed                  -> CORRECT: POST /condition/{current uuid} (new version)
- in flight / failed before (outcome unknown) -> VERIFY_*: look in OpenMRS first, send only if absent
- patient / concept not found                 -> retried (VERIFY_*) while the first attempt is younger
                                                 than the retry window, or when the content changed
- ambiguous patient / rejected by the server  -> SKIP until the content changes (a person must look)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.states import (
    CONFIRMED_STATES,
    NEEDS_HUMAN_STATES,
    UNSETTLED_STATES,
    WAITING_STATES,
    SubmissionEntry,
    as_utc,
)


class Action(StrEnum):
    SKIP = "skip"
    CREATE = "create"
    VERIFY_CREATE = "verify_create"
    CORRECT = "correct"
    VERIFY_CORRECT = "verify_correct"


@dataclass(frozen=True)
class Plan:
    key: str
    action: Action
    condition_uuid: str
    content_hash: str
    fresh: bool = False  # the log's entry (if any) is about another server: start over

    @property
    def sends(self) -> bool:
        return self.action is not Action.SKIP

    @property
    def corrects(self) -> bool:
        """A correction (to send, or to verify): OpenMRS was confirmed to hold a version of the record,
        whose id the log keeps."""
        return self.action in (Action.CORRECT, Action.VERIFY_CORRECT)


def _resume(entry: SubmissionEntry, content_hash: str) -> Plan:
    """Outcome of earlier attempts unknown: check OpenMRS before sending anything."""
    action = Action.VERIFY_CORRECT if entry.confirmed_hash is not None else Action.VERIFY_CREATE
    return Plan(entry.key, action, entry.condition_uuid, content_hash)


def _within_window(entry: SubmissionEntry, now: datetime, retry_days: int) -> bool:
    if entry.first_attempt_at is None:
        return True
    return as_utc(now) - as_utc(entry.first_attempt_at) <= timedelta(days=retry_days)


def plan_submission(
    key: str,
    content_hash: str,
    entry: SubmissionEntry | None,
    *,
    server: str,
    now: datetime,
    patient_retry_days: int,
) -> Plan:
    if entry is None or entry.server != server:
        return Plan(key, Action.CREATE, condition_uuid(key), content_hash, fresh=entry is not None)
    changed = entry.content_hash != content_hash
    if entry.state in CONFIRMED_STATES:
        if entry.confirmed_hash == content_hash:
            return Plan(key, Action.SKIP, entry.condition_uuid, content_hash)
        return Plan(key, Action.CORRECT, entry.condition_uuid, content_hash)
    if entry.state in UNSETTLED_STATES:
        return _resume(entry, content_hash)
    if entry.state in WAITING_STATES:
        if changed or _within_window(entry, now, patient_retry_days):
            return _resume(entry, content_hash)
        return Plan(key, Action.SKIP, entry.condition_uuid, content_hash)
    if entry.state in NEEDS_HUMAN_STATES and changed:
        return _resume(entry, content_hash)
    return Plan(key, Action.SKIP, entry.condition_uuid, content_hash)
