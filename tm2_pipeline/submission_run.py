"""Glue for the per-file asset and the nightly retry job: submit; fail cleanly on bad credentials."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import dagster as dg

from tm2_pipeline.openmrs.errors import OpenMRSError, OpenMRSNotRetryable
from tm2_pipeline.openmrs.responses import sanitize
from tm2_pipeline.openmrs.states import SubmissionSummary
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource
from tm2_pipeline.store.submissions import SubmissionLog

# Stored records read and submitted at a time: a file's records are never all in memory at once
# (a stored record decodes to a dict of about 3 KB: a million of them would take about 3 GB).
SUBMISSION_BATCH_RECORDS = 5_000


def submit_stored_records(
    keys: Sequence[str], *, mongo: MongoResource, openmrs: OpenMRSResource, now: datetime
) -> SubmissionSummary:
    """Submit the stored records of these (distinct) keys, read from the store a batch at a time;
    keys without a stored record are skipped. Bad credentials, missing privileges or config become
    a Failure no retry repeats. When the run fails, keys it never marked are logged as
    `failed_retryable` (`SubmissionLog.mark_unsent`) for the nightly retry.

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
        _leave_for_the_nightly_retry(keys, log, openmrs, error, now)
        if isinstance(error, OpenMRSNotRetryable):
            raise dg.Failure(description=str(error), allow_retries=False) from None
        raise


def _leave_for_the_nightly_retry(
    keys: Sequence[str], log: SubmissionLog, openmrs: OpenMRSResource, error: OpenMRSError, now: datetime
) -> None:
    """Keys this run never marked would otherwise wait for a re-run of their file."""
    try:
        server = openmrs.client_config().server
    except OpenMRSError:
        return  # the settings themselves are wrong: nothing can be sent until they are fixed
    log.mark_unsent(keys, server, f"not sent: {sanitize(str(error))}", now)
