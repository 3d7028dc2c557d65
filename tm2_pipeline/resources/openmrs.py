"""The OpenMRS resource: a real server (base_url set) or the in-process sandbox (base_url None).

The sandbox is the emulator app served through `httpx.ASGITransport`, its conditions persisted under
`<tm2_home>/openmrs-sandbox`, so a later `tm2 ingest` sees what an earlier one created. Tests swap
the HTTP transport by subclassing and overriding `transport()` (a transport set on an instance after
construction would not survive Dagster's resource initialisation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from tm2_pipeline.home import Tm2Home
from tm2_pipeline.openmrs.client_config import ClientConfig
from tm2_pipeline.openmrs.errors import TransientOpenMRSError
from tm2_pipeline.openmrs.record_exchange import SubmissionLogLike
from tm2_pipeline.openmrs.states import SubmissionSummary
from tm2_pipeline.openmrs.store_check import StoredRecords
from tm2_pipeline.openmrs.submitter import SubmitterOptions, run_submission
from tm2_pipeline.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME

# Never resolved: the sandbox is reached through an in-process transport, never the network.
SANDBOX_BASE_URL = "http://openmrs-sandbox.invalid/openmrs"


class OpenMRSResource(dg.ConfigurableResource):
    """Submits stored TM2 records to OpenMRS as Conditions, exactly once (see `openmrs.submitter`)."""

    base_url: str | None = None
    username: str | None = None
    password: str | None = None
    tm2_home: str = ".tm2"
    concurrency: int = 8
    concept_source: str = "ICD-11-TM2"
    allow_noncoded: bool = True
    allow_insecure: bool = False
    ca_bundle: str | None = None  # PEM file of a private CA to trust besides the public ones
    patient_retry_days: int = 30
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    batch_size: int = 200
    page_limit: int = 100  # OpenMRS's webservices.rest.maxResultsAbsolute
    api: str = "rest"  # conditions through the REST API, or "fhir": FHIR2's Condition
    sandbox_wait_s: float = 120.0  # how long a run waits for another process holding the sandbox

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "password" and value else value)

    def transport(self) -> httpx.AsyncBaseTransport | None:
        """The HTTP transport for a real server; None = httpx's own. Tests override this."""
        return None

    @property
    def uses_sandbox(self) -> bool:
        return self.base_url is None

    @property
    def sandbox_dir(self) -> Path:
        return Tm2Home(Path(self.tm2_home).expanduser().resolve()).sandbox_dir

    @property
    def target(self) -> str:
        """Where submissions go, for messages and metadata (never credentials)."""
        return (
            f"the local OpenMRS sandbox in {self.sandbox_dir}"
            if self.uses_sandbox
            else self.client_config().server
        )

    def client_config(self) -> ClientConfig:
        sandbox = self.uses_sandbox
        return ClientConfig(
            base_url=SANDBOX_BASE_URL if sandbox else str(self.base_url),
            username=self.username or (SANDBOX_USERNAME if sandbox else ""),
            password=self.password or (SANDBOX_PASSWORD if sandbox else ""),
            concurrency=self.concurrency,
            concept_source=self.concept_source,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_attempts=self.max_attempts,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            allow_insecure=self.allow_insecure or sandbox,
            ca_bundle=None if sandbox else self.ca_bundle,
            page_limit=self.page_limit,
            api=self.api,
        )

    @contextlib.contextmanager
    def _connection(self, config: ClientConfig) -> Iterator[httpx.AsyncBaseTransport | None]:
        if not self.uses_sandbox:
            yield self.transport()
            return
        # Imported here: a deployment with a real OpenMRS never loads the emulator.
        from tm2_pipeline.openmrs.emulator.persistence import SandboxBusyError
        from tm2_pipeline.openmrs.emulator.server import open_sandbox

        with contextlib.ExitStack() as stack:
            try:
                sandbox = stack.enter_context(
                    open_sandbox(
                        self.sandbox_dir,
                        username=config.username,
                        password=config.password,
                        wait_s=self.sandbox_wait_s,
                    )
                )
            except SandboxBusyError as error:
                # Another run holds it (two `tm2 ingest` at once): like a server that is down, so
                # the records are logged for a later run and the step's retry policy tries again.
                raise TransientOpenMRSError(str(error), method="-") from None
            yield self.transport() or httpx.ASGITransport(app=sandbox.app, raise_app_exceptions=False)

    def submit(
        self, records: Sequence[Mapping[str, Any]], log: SubmissionLogLike, now: datetime
    ) -> SubmissionSummary:
        """Send what OpenMRS lacks. Raises `OpenMRSNotRetryable` (refused credentials, missing privilege,
        bad configuration: never retry) and `TransientOpenMRSError` when OpenMRS cannot be reached at all."""
        return self.submit_batches([records], log, now)

    def submit_batches(
        self,
        batches: Iterable[Sequence[Mapping[str, Any]]],
        log: SubmissionLogLike,
        now: datetime,
        store: StoredRecords | None = None,
    ) -> SubmissionSummary:
        """`submit` for records that come a batch at a time (read lazily from `store`), all in one
        OpenMRS session; keys distinct across batches. Each chunk is sent as `store` holds it then."""
        config = self.client_config()
        options = SubmitterOptions(
            allow_noncoded=self.allow_noncoded,
            patient_retry_days=self.patient_retry_days,
            batch_size=self.batch_size,
        )
        with self._connection(config) as transport:
            return run_submission(
                batches, config=config, log=log, now=now, options=options, transport=transport, store=store
            )
