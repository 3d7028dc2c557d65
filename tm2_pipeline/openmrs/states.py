"""The vocabulary of the submission log: states, attempts, entries and outcomes (plain values, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class SubmissionState(StrEnum):
    IN_FLIGHT = "in_flight"
    SUBMITTED = "submitted"
    ALREADY_PRESENT = "already_present"
    PATIENT_NOT_FOUND = "patient_not_found"
    AMBIGUOUS_PATIENT = "ambiguous_patient"
    CONCEPT_NOT_FOUND = "concept_not_found"
    REJECTED_BY_SERVER = "rejected_by_server"
    FAILED_RETRYABLE = "failed_retryable"


# The record is in OpenMRS with the content we last confirmed.
CONFIRMED_STATES = frozenset({SubmissionState.SUBMITTED, SubmissionState.ALREADY_PRESENT})
# Nothing is known to be final: the next run must check OpenMRS before sending again.
UNSETTLED_STATES = frozenset({SubmissionState.IN_FLIGHT, SubmissionState.FAILED_RETRYABLE})
# Waiting for someone to register the patient or map the concept: retried within the window.
WAITING_STATES = frozenset({SubmissionState.PATIENT_NOT_FOUND, SubmissionState.CONCEPT_NOT_FOUND})
# A person must look (data or server problem): retried only when the record's content changes.
NEEDS_HUMAN_STATES = frozenset({SubmissionState.AMBIGUOUS_PATIENT, SubmissionState.REJECTED_BY_SERVER})
# What a person can send again once the cause is fixed (`tm2 retry --release`): looked up first.
RELEASABLE_STATES = NEEDS_HUMAN_STATES | WAITING_STATES


def as_utc(moment: datetime) -> datetime:
    """BSON gives naive UTC datetimes back: make them comparable with aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Attempt:
    """One exchange with OpenMRS about one record. `message` never contains an identifier."""

    at: datetime
    method: str
    status: int | None
    message: str

    def to_document(self) -> dict:
        return {"at": self.at, "method": self.method, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class SubmissionEntry:
    """What the log knows about one record key.

    `condition_uuid` is the newest version known to be (or being created) in OpenMRS; `content_hash`
    is what was last sent; `confirmed_hash` is what OpenMRS is known to hold (None: never confirmed).
    """

    key: str
    state: SubmissionState
    condition_uuid: str
    content_hash: str | None
    confirmed_hash: str | None
    server: str | None
    first_attempt_at: datetime | None
    updated_at: datetime | None
    attempts: tuple[Attempt, ...] = ()
    claim: str | None = None  # the token of the last run that claimed a correction of this record
    api: str | None = None  # the API it was last sent through ("rest", "fhir"; None: before FHIR mode)


@dataclass(frozen=True)
class PendingSubmission:
    """A write-ahead mark: this record is about to be sent with this content.

    `fresh` means: forget what the log knew (never sent to this server), start from the record's own uuid.
    `new` means: the log had no entry for this key when the batch was planned (it can be inserted).
    `claimed` means: OpenMRS cannot tell two runs' copies apart, so only one run may send it. That is
    a correction over the REST API (a new version has no uuid of its own: two would fork the
    condition), and any write over FHIR (FHIR2 ignores a client id: two creates are two conditions).
    It is marked only if the entry still holds the `claim` read when the batch was planned (none, for
    a key the log does not hold yet), and no other live run holds it (`SubmissionLog`).
    """

    key: str
    condition_uuid: str
    content_hash: str
    fresh: bool
    new: bool = False
    claimed: bool = False
    claim: str | None = None
    changed: bool = False  # other content than the log's entry was last marked with: a new retry window
    api: str = "rest"  # the API it is sent through


@dataclass(frozen=True)
class SubmissionOutcome:
    """How one record's submission ended in this run."""

    key: str
    state: SubmissionState
    condition_uuid: str
    attempts: tuple[Attempt, ...]
    confirmed_hash: str | None = None  # set only when OpenMRS now holds the record's content
    created: bool = False  # this run created a condition or a new version
    corrected: bool = False  # ...and it was a new version of an existing one
    # Another run holds this record's correction: its outcome is that run's to write, not this one's.
    left_to_other_run: bool = False
    # A write OpenMRS may still be processing (its answer was lost): no run may send the record again
    # until OpenMRS has had time to finish it (`SubmissionLog`, CLAIM_LEASE).
    in_doubt: bool = False
    # The content this run planned to send (the store's when the record was planned).
    content_hash: str | None = None
    # This run took the record's claim (`PendingSubmission.claimed`, or `hold`): the outcome releases
    # it, if this run still holds it. An unclaimed send's outcome leaves any claim alone.
    held_claim: bool = False


@dataclass
class SubmissionSummary:
    """What one run did. `submitted`: conditions (or new versions) created by THIS run;
    `failed`: records left unsettled (in_flight / failed_retryable) for a later run."""

    total: int = 0
    submitted: int = 0
    corrected: int = 0
    unchanged: int = 0
    failed: int = 0
    state_counts: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)

    def merge(self, other: SubmissionSummary) -> None:
        """Add the records of another batch of the same run (`requests` is the client's to set)."""
        self.total += other.total
        self.submitted += other.submitted
        self.corrected += other.corrected
        self.unchanged += other.unchanged
        self.failed += other.failed
        for state, count in other.state_counts.items():
            self.state_counts[state] = self.state_counts.get(state, 0) + count

    def add(self, state: SubmissionState) -> None:
        self.total += 1
        self.state_counts[state.value] = self.state_counts.get(state.value, 0) + 1
        if state in UNSETTLED_STATES:
            self.failed += 1
