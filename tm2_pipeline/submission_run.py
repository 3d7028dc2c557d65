"""Glue for the per-file asset and the nightly retry job: submit; fail cleanly on bad credentials."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dagster as dg

from tm2_pipeline.openmrs.errors import OpenMRSNotRetryable
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.resources.openmrs import OpenMRSResource


def submit_and_summarize(
    records: Sequence[dict[str, Any]], *, mongo: MongoResource, openmrs: OpenMRSResource, now: datetime
):
    """Submit records; bad credentials, missing privileges or config become a Failure no retry repeats.

    Seven failed logins lock the OpenMRS account for five minutes, so one attempt per run is all.
    """
    try:
        return openmrs.submit(records, mongo.submissions(), now)
    except OpenMRSNotRetryable as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
