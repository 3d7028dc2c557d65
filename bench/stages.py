"""The measured stages (a)-(f) of `bench.run`; each runs in its own process and returns a StageResult.

Set-up work (generating, validating to build the floor's documents, storing the records OpenMRS gets)
happens outside the measured block; only the stage's own work is inside it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pymongo import MongoClient

from bench.measure import StageResult, measured

FLOOR_DB = "bench_floor"
PIPELINE_DB = "bench_pipeline"
NAIVE_DB = "bench_naive"
OPENMRS_DB = "bench_openmrs"
PIPELINE_ASSETS = ("raw_tm2_file", "validated_tm2_records", "tm2_mongo_records")


@dataclass
class BenchContext:
    workdir: str
    data_path: str
    rows: int
    seed: int
    naive_rows: int = 5000
    openmrs_records: int = 2000
    openmrs_url: str | None = None
    concurrency: int = 8
    latency_ms: float = 20.0
    openmrs_api: str = "rest"  # (f) through the REST API, or FHIR2 (a search before every create)
    indexed_floor: bool = True

    @property
    def home(self) -> Path:
        """TM2_HOME of the pipeline stages (and of the embedded store, when it is used)."""
        return Path(self.workdir) / "home"


def today() -> date:
    return datetime.now(ZoneInfo("Asia/Kolkata")).date()


def mongo_uri(ctx: BenchContext) -> str:
    """MONGODB_URI when given, else the embedded store the orchestrator started for this home."""
    if os.environ.get("MONGODB_URI"):
        return os.environ["MONGODB_URI"]
    from tm2_pipeline.embedded.secantus import EmbeddedSecantus

    info = EmbeddedSecantus(ctx.home).status()
    if info is None:
        raise RuntimeError("the benchmark's embedded store is not running")
    return info.uri


def _client(ctx: BenchContext) -> MongoClient:
    # The pipeline's own write concern (TM2_MONGO_WRITE_CONCERN default), so the floor is comparable.
    return MongoClient(mongo_uri(ctx), w="majority", tz_aware=True)


def stage_floor(ctx: BenchContext) -> StageResult:
    """(a) bare insert_many(ordered=False) of the pipeline's final documents into an empty collection."""
    from tm2_pipeline.store.records import record_documents
    from tm2_pipeline.validation import validate_tm2_export

    data = Path(ctx.data_path).read_bytes()
    accepted = validate_tm2_export(data, today=today()).accepted_records
    sha256 = hashlib.sha256(data).hexdigest()
    now = datetime.now(UTC)
    documents = list(record_documents(accepted, file_name=Path(ctx.data_path).name, sha256=sha256, now=now))
    with _client(ctx) as client:
        collection = client[FLOOR_DB]["tm2_records"]
        collection.drop()
        result = StageResult("floor", rows=len(documents), note="documents; only the _id index")
        with measured(result):
            collection.insert_many(documents, ordered=False)  # they carry their _id: never mutated
        result.extra["stored"] = collection.estimated_document_count()
        if ctx.indexed_floor:
            # For the record: the same insert into a collection with the pipeline's secondary indexes.
            from tm2_pipeline.store.indexes import INDEXES, RECORDS_COLLECTION

            collection.drop()
            collection.create_indexes(INDEXES[RECORDS_COLLECTION])
            indexed = StageResult("floor_indexed")
            with measured(indexed):
                collection.insert_many(documents, ordered=False)
            result.extra["with_pipeline_indexes_wall_s"] = round(indexed.wall_s, 2)
        collection.drop()
    return result


def _discard(_: object) -> None:
    pass


def stage_validation(ctx: BenchContext) -> StageResult:
    """(c) read + normalize + rules + records of the whole file, as the validated asset runs it:
    chunk by chunk, each chunk's accepted records appended to the Parquet table on disk and its
    rejected rows handed on (to the store in the asset; dropped here: (c) measures validation)."""
    from tm2_pipeline.accepted_table import AcceptedTableWriter
    from tm2_pipeline.validation import validate_tm2_export

    data_path = Path(ctx.data_path)
    table_path = Path(ctx.workdir) / "validated.parquet"
    result = StageResult("validation", rows=ctx.rows, note="validate_tm2_export -> Parquet table, chunked")
    with measured(result), AcceptedTableWriter(table_path) as writer:
        # Rejected rows leave chunk by chunk as in the asset, which sends them to the store.
        outcome = validate_tm2_export(data_path, today=today(), sink=writer.write, reject_sink=_discard)
        writer.close({"file": table_path.name})
    result.extra = {
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected,
        "input_mb": round(data_path.stat().st_size / 2**20, 1),
    }
    table_path.unlink()
    return result


WARMUP_DB = "bench_warmup"
WARMUP_ROWS = 200


def stage_pipeline(ctx: BenchContext, name: str = "pipeline") -> StageResult:
    """(b)/(d) raw -> validated -> stored through Dagster, in-process, as `tm2 ingest` runs a file.

    A warm-up run of a small file (into its own database, so the measured one still starts empty)
    comes first and is reported apart: it pays the per-process costs (lazy imports, and on a machine
    with PYTHONDONTWRITEBYTECODE set, compiling them), which are not a cost per row.
    """
    import dagster as dg

    from tm2_pipeline.compute_logs import in_process_instance
    from tm2_pipeline.ingestion import Ingestor, prepare_dagster_home
    from tm2_pipeline.settings import load_settings

    os.environ.update(
        TM2_HOME=str(ctx.home), DAGSTER_HOME=str(ctx.home / "dagster"), TM2_MONGODB_DB=PIPELINE_DB
    )
    settings = load_settings()
    dagster_home = prepare_dagster_home(settings)
    warmup_path = Path(ctx.workdir) / f"warmup_{name}.csv"
    _first_rows(Path(ctx.data_path), WARMUP_ROWS, warmup_path)
    result = StageResult(name, rows=ctx.rows, note="Dagster in-process, 3 assets + checks")
    warmup = StageResult("warmup")
    with in_process_instance(dagster_home) as instance:  # the instance `tm2 ingest` runs in
        warmup_settings = settings.model_copy(update={"mongodb_db": WARMUP_DB})
        warmup_ingestor = Ingestor(warmup_settings, instance, assets=PIPELINE_ASSETS, started_by="bench")
        with measured(warmup):
            warmup_ingestor.ingest(warmup_path)
        ingestor = Ingestor(settings, instance, assets=PIPELINE_ASSETS, started_by="bench")
        with measured(result):
            report = ingestor.ingest(Path(ctx.data_path))
        checks = instance.all_logs(report.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    result.extra = {
        "status": report.status,
        "error": report.error,
        "checks": len(checks),
        **report.counts,  # `submitted` and `submission_failed` stay 0: OpenMRS is not part of (b)
        "warmup_cpu_s": round(warmup.cpu_s, 2),
    }
    if report.status != "succeeded":
        result.note = f"run {report.status}: {report.error}"
    return result


def stage_rerun(ctx: BenchContext) -> StageResult:
    """(d) the same file again, unchanged, into the collection (b) filled."""
    result = stage_pipeline(ctx, name="rerun")
    result.note = "same file again; " + result.note
    return result


def _first_rows(path: Path, count: int, target: Path) -> int:
    """Write the header and the first `count` records of `path` to `target`; how many were written."""
    with path.open(encoding="utf-8", newline="") as source:
        records = list(zip(range(count + 1), csv.reader(source), strict=False))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(record for _, record in records)
    target.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return len(records) - 1


def stage_naive(ctx: BenchContext) -> StageResult:
    """(e) iterrows + a pydantic model per row + update_one(upsert=True) per row, on the first rows."""
    from bench.naive import naive_seed

    subset = Path(ctx.workdir) / "naive_subset.csv"
    rows = _first_rows(Path(ctx.data_path), min(ctx.rows, ctx.naive_rows), subset)
    with _client(ctx) as client:
        collection = client[NAIVE_DB]["tm2_records"]
        collection.drop()
        result = StageResult("naive", rows=rows, note=f"first {rows} rows only; compare per row")
        with measured(result):
            upserted, skipped = naive_seed(subset, collection)
    result.extra = {"upserted": upserted, "skipped": skipped}
    return result


def sandbox_patient_ids() -> list[str]:
    """Clinic identifiers (ABHA, MRN) that name exactly one patient of the emulator's seed."""
    from collections import Counter

    from tm2_pipeline.openmrs.emulator.seed import load_seed

    identifiers = [
        entry["identifier"]
        for patient in load_seed().patients
        for entry in patient["identifiers"]
        if entry["identifierType"] != "OpenMRS ID"
    ]
    counts = Counter(identifiers)
    return sorted(identifier for identifier, count in counts.items() if count == 1)


def stage_openmrs(ctx: BenchContext) -> StageResult:
    """(f) new records sent to the emulator over HTTP (injected latency), `concurrency` in flight."""
    from bench.generate import generate_tm2_csv
    from bench.http_floor import bare_http_rate
    from tm2_pipeline.openmrs.client_config import ClientConfig
    from tm2_pipeline.resources.openmrs import OpenMRSResource
    from tm2_pipeline.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME
    from tm2_pipeline.store.indexes import ensure_indexes
    from tm2_pipeline.store.records import RecordStore
    from tm2_pipeline.store.submissions import SubmissionLog
    from tm2_pipeline.validation import validate_tm2_export

    data = generate_tm2_csv(
        ctx.openmrs_records, seed=ctx.seed + 1, dirty_share=0, patient_ids=sandbox_patient_ids()
    )
    accepted = validate_tm2_export(data, today=today()).accepted_records
    with _client(ctx) as client:
        client.drop_database(OPENMRS_DB)
        db = client[OPENMRS_DB]
        ensure_indexes(db)
        store = RecordStore(db)
        store.store(
            accepted, file_name="openmrs.csv", sha256=hashlib.sha256(data).hexdigest(), now=datetime.now(UTC)
        )
        records = store.find_by_keys(accepted["record_key"].tolist())
        openmrs = OpenMRSResource(
            base_url=ctx.openmrs_url,
            username=SANDBOX_USERNAME,
            password=SANDBOX_PASSWORD,
            concurrency=ctx.concurrency,
            tm2_home=str(ctx.home),
            api=ctx.openmrs_api,
        )
        note = f"{len(records)} new records, concurrency {ctx.concurrency}, {ctx.openmrs_api.upper()} API"
        result = StageResult("openmrs", note=note)
        with measured(result):
            # As the asset sends them: each chunk planned from the store's content at that moment.
            summary = openmrs.submit_batches([records], SubmissionLog(db), datetime.now(UTC), store=store)
    bound = ctx.concurrency / (ctx.latency_ms / 1000)
    # After the measured block, outside it: the same number of bare requests, for the HTTP floor.
    http_floor = bare_http_rate(
        ClientConfig(ctx.openmrs_url, SANDBOX_USERNAME, SANDBOX_PASSWORD).rest_base,
        (SANDBOX_USERNAME, SANDBOX_PASSWORD),
        requests=len(records),
        concurrency=ctx.concurrency,
    )
    result.rows = summary.submitted
    result.extra = {
        "records": len(records),
        "submitted": summary.submitted,
        "requests": sum(summary.requests.values()),
        "achieved_per_s": summary.submitted / result.wall_s if result.wall_s else 0.0,
        "bound_per_s": bound,
        "http_floor_per_s": http_floor,
        "states": summary.state_counts,
    }
    return result


STAGES = {
    "floor": stage_floor,
    "pipeline": stage_pipeline,
    "validation": stage_validation,
    "rerun": stage_rerun,
    "naive": stage_naive,
    "openmrs": stage_openmrs,
}
