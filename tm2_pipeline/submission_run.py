"""Glue for the per-file asset and the nightly retry job: submit; fail cleanly on bad credentials;
send what a run whose process died left."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import dagster as dg

from tm2_pipeline.abandoned_runs import (
    end_abandoned_runs,
    later_run_under_way,
    mark_finished,
    runs_to_finish,
    why_not_send,
)
from tm2_pipeline.accepted_table import AcceptedTable
from tm2_pipeline.assets.validated import ASSET_NAME as VALIDATED_ASSET
from tm2_pipeline.home import Tm2Home
from tm2_pipeline.openmrs.errors import OpenMRSError, OpenMRSNotRetryable
from tm2_pipeline.openmrs.responses import sanitize
from tm2_pipeline.openmrs.states import (
    CONFIRMED_STATES,
    NEEDS_HUMAN_STATES,
    UNSETTLED_STATES,
    WAITING_STATES,
    SubmissionState,
    SubmissionSummary,
)
from tm2_pipeline.partitions import PARTITION_TAG, SHA256_TAG
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline.store.records import RecordStore
from tm2_pipeline.store.submissions import SubmissionLog

# Stored records read and submitted at a time: a file's records are never all in memory at once
# (a stored record decodes to a dict of about 3 KB: a million of them would take about 3 GB).
SUBMISSION_BATCH_RECORDS = 5_000
# Metadata of a failed submission step and of the asset's materialization: the file's records
# confirmed in OpenMRS (whichever run sent them), left for a later run, and waiting for a person.
IN_OPENMRS = "in_openmrs"
NOT_FINAL = "not_final"
WAITING_FOR_A_PERSON = "waiting_for_a_person"


def outcome_counts(state_counts: Mapping[str, int]) -> dict[str, int]:
    """The three outcome counts of records whose submission states are counted in `state_counts`."""

    def records_in(states: frozenset[SubmissionState]) -> int:
        return sum(state_counts.get(state.value, 0) for state in states)

    return {
        IN_OPENMRS: records_in(CONFIRMED_STATES),
        # Left for a later run (crashed, transient error, patient or concept not there yet).
        NOT_FINAL: records_in(UNSETTLED_STATES | WAITING_STATES),
        WAITING_FOR_A_PERSON: records_in(NEEDS_HUMAN_STATES),
    }


def ledger_counts(submitted: int, state_counts: Mapping[str, int]) -> dict[str, int]:
    """The ingestion ledger's OpenMRS counts: records sent by the run, and the outcome counts of the
    file's records whose submission states are counted in `state_counts`."""
    outcome = outcome_counts(state_counts)
    return {
        "submitted": submitted,
        "in_openmrs": outcome[IN_OPENMRS],
        "submission_failed": outcome[NOT_FINAL],
        "needs_a_person": outcome[WAITING_FOR_A_PERSON],
    }


def submit_stored_records(
    keys: Sequence[str], *, mongo: MongoResource, openmrs: OpenMRSResource, now: datetime
) -> SubmissionSummary:
    """Submit the stored records of these (distinct) keys, read from the store a batch at a time;
    keys without a stored record are skipped. Bad credentials, missing privileges, config and an
    interrupt (Ctrl-C, SIGTERM) become a Failure no retry repeats; an outage, one the step's
    RetryPolicy retries. Either way keys the run never marked are logged as `failed_retryable`
    (`SubmissionLog.mark_unsent`) for the nightly retry, and the Failure says how many wait.

    Seven failed logins lock the OpenMRS account for five minutes, so one attempt per run is all.
    """
    records = mongo.records()

    def batches() -> Iterator[Sequence[dict[str, Any]]]:
        for start in range(0, len(keys), SUBMISSION_BATCH_RECORDS):
            yield records.find_by_keys(keys[start : start + SUBMISSION_BATCH_RECORDS])

    log = mongo.submissions()
    try:
        return openmrs.submit_batches(batches(), log, now, store=records)
    except OpenMRSError as error:
        # A transient one is still retried by the step's RetryPolicy.
        retry = not isinstance(error, OpenMRSNotRetryable)
        raise _stopped(str(error), keys, records, log, openmrs, now, allow_retries=retry) from None
    except KeyboardInterrupt as interrupt:
        # Ctrl-C or SIGTERM (openmrs.interrupts): Dagster would retry an interrupted step under its
        # RetryPolicy, sending again what the user just stopped. Stopped, it is the next run's.
        reason = f"interrupted ({interrupt}): stopped sending"
        raise _stopped(reason, keys, records, log, openmrs, now, allow_retries=False) from None


def _stopped(
    reason: str,
    keys: Sequence[str],
    records: RecordStore,
    log: SubmissionLog,
    openmrs: OpenMRSResource,
    now: datetime,
    *,
    allow_retries: bool,
) -> dg.Failure:
    """A Failure, so that the run's report can say how many records are left (not 0 for want of a
    materialization)."""
    counts = _leave_for_the_nightly_retry(keys, records, log, openmrs, reason, now)
    if counts[NOT_FINAL]:
        reason += f"; {counts[NOT_FINAL]} of these records wait for a later run (the nightly retry)"
    return dg.Failure(description=reason, allow_retries=allow_retries, metadata=counts)


def _leave_for_the_nightly_retry(
    keys: Sequence[str],
    records: RecordStore,
    log: SubmissionLog,
    openmrs: OpenMRSResource,
    reason: str,
    now: datetime,
) -> dict[str, int]:
    """Keys this run never marked, and corrections it never reached, would otherwise wait for a
    re-run of their file. Returns the outcome counts of `keys` as the log now holds them."""
    try:
        server = openmrs.client_config().server
    except OpenMRSError:
        server = None  # the settings themselves are wrong: nothing can be sent until they are fixed
    if server is not None:
        log.mark_unsent(keys, server, f"not sent: {sanitize(reason)}", now, records.content_hashes)
    return outcome_counts(log.state_counts(keys))


def finish_abandoned_runs(
    instance: dg.DagsterInstance,
    *,
    home: Tm2Home,
    mongo: MongoResource,
    openmrs: OpenMRSResource,
    now: datetime,
    say: Callable[[str], None],
    retried: Collection[str] = (),
) -> SubmissionSummary:
    """Send the records of runs whose process died after their store step. The retry of logged
    submissions cannot see the records such a run never reached: they were never logged. The keys
    are the file's own, from its validated table (as the asset reads them): a record whose content an
    earlier file stored first belongs to this file too. Each run is dealt with once (tagged); a
    Failure leaves it for the next night, the keys it reached logged for retry. `retried`: keys this
    night's retry has just submitted (not counted twice)."""
    end_abandoned_runs(instance)  # also of files nobody has run again since
    summary = SubmissionSummary()
    for run in runs_to_finish(instance):
        name = run.tags.get(PARTITION_TAG, "?")
        sha256 = run.tags.get(SHA256_TAG, "")
        if (under_way := later_run_under_way(instance, run)) is not None:
            say(
                f"{name}: run {run.run_id}, whose process died: left for another night "
                f"(run {under_way} of the file is under way)"
            )
            continue
        outcome = why_not_send(instance, run)
        file_keys = None if outcome else _validated_keys(home, name, sha256)
        if outcome is None and file_keys is None:
            outcome = (
                "its validated table is gone or another version's: the file's next run sends its records"
            )
        if file_keys is not None:
            sent = submit_stored_records(
                [key for key in file_keys if key not in retried], mongo=mongo, openmrs=openmrs, now=now
            )
            summary.merge(sent)
            counts = ledger_counts(sent.submitted, mongo.submissions().state_counts(file_keys))
            mongo.ingestions().record_outcome_of_run(
                run.run_id, file=name, sha256=sha256, status="succeeded", counts=counts, at=now
            )
            outcome = f"sent what it left ({sent.submitted} sent now; {len(file_keys)} records in its file)"
        mark_finished(instance, run, outcome)
        say(f"{name}: run {run.run_id}, whose process died: {outcome}")
    return summary


def _validated_keys(home: Tm2Home, name: str, sha256: str) -> list[str] | None:
    """The record keys of the file name's validated table, if it holds this content; else None."""
    path = home.table_path(VALIDATED_ASSET, name)  # where the io manager keeps it
    if not path.exists():
        return None
    table = AcceptedTable(path)
    if table.attrs.get("sha256") != sha256:
        return None
    return table.column("record_key").to_pylist()
