"""tm2_mongo_records: the accepted records of one file, written idempotently to MongoDB."""

from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from tm2_pipeline.abandoned_runs import tag_run_worker
from tm2_pipeline.accepted_table import AcceptedTable
from tm2_pipeline.codes import tm2_code_list
from tm2_pipeline.other_versions import left_behind
from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.resources.mongo import MongoResource
from tm2_pipeline.store.records import StoreCounts
from tm2_pipeline.validation_summary import table_identity

STORED_ONCE = "stored_once"
OTHER_VERSIONS_COVERED = "other_versions_covered"
CODES_VALID = "codes_valid"
DATES_VALID = "dates_valid"
EARLIEST_DATE = "1900-01-01"
# Record keys of a file looked up in MongoDB after its store (`stored_once`).
STORED_SAMPLE = 1000

# Transient MongoDB trouble (an election, a blip): retry the step; the write is idempotent.
MONGO_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.asset(
    partitions_def=tm2_csv_files,
    retry_policy=MONGO_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            STORED_ONCE,
            asset="tm2_mongo_records",
            blocking=True,
            description="every accepted key was inserted, updated or found unchanged, exactly once",
        ),
        dg.AssetCheckSpec(
            CODES_VALID,
            asset="tm2_mongo_records",
            blocking=True,
            description="every stored tm2_code is in the ICD-11 TM2 2025-01 list",
        ),
        dg.AssetCheckSpec(
            DATES_VALID,
            asset="tm2_mongo_records",
            blocking=True,
            description="every diagnosis_date is between 1900-01-01 and today",
        ),
        dg.AssetCheckSpec(
            OTHER_VERSIONS_COVERED,
            asset="tm2_mongo_records",
            description="warns of records stored from another version of this file name that this "
            "version no longer has (a key field corrected, a row removed): they stay in MongoDB and "
            "OpenMRS, since a correction adds and updates but never retracts",
        ),
    ],
    description="Documents in tm2_records, _id = record key; inserted / updated / unchanged counted exactly.",
    group_name="tm2",
)
def tm2_mongo_records(
    context: dg.AssetExecutionContext,
    validated_tm2_records: AcceptedTable,
    pipeline: PipelineConfig,
    mongo: MongoResource,
):
    tag_run_worker(context.instance, context.run)  # a retry from failure may start here
    table = validated_tm2_records
    file_name, sha256 = table.attrs["file"], table.attrs["sha256"]
    accepted = table.num_rows
    store = mongo.records()
    earlier = mongo.ingestions().entry(file_name, sha256) or {}
    generation = earlier.get("store_generation")
    validation = table_identity(table.attrs)
    skipped = (
        generation is not None
        and earlier.get("stored_table") == validation
        and generation == store.generation()
    )
    if skipped:
        # This very validation of these bytes was stored, and no file has written a record since.
        context.log.info("unchanged file, store unchanged since it was stored: skipping the writes")
        counts = StoreCounts(unchanged=accepted, generation=generation)
    else:
        # Read back a batch at a time: memory does not grow with the file.
        frames = table.frames(store.batch_size)
        counts = store.store(
            frames,
            file_name=file_name,
            sha256=sha256,
            now=datetime.now(UTC),
            on_wait=context.log.info,
            run_id=context.run.run_id,
        )
    # Read after the writes: this version's keys are all stored now, whichever version wrote them.
    versions = mongo.ingestions().other_versions(file_name, sha256)
    behind = left_behind(store.sources_of_versions(file_name, versions), table.column("record_key"))
    if behind.count:
        context.log.warning(
            f"{behind.count} records stored from other versions of {file_name} are not in this one: "
            "they stay in MongoDB and OpenMRS (a correction never retracts; if it meant to remove "
            "them, and no other file holds them, a person voids them in OpenMRS)"
        )
    stored_counts = {
        "inserted": counts.inserted,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "not_in_this_version": behind.count,
    }
    mongo.ingestions().record_outcome(
        file=file_name,
        sha256=sha256,
        status="stored",
        counts=stored_counts,
        at=datetime.now(UTC),
        run_id=context.run.run_id,
        store_generation=counts.generation,
        stored_table=validation,
    )
    yield dg.MaterializeResult(
        metadata={"dagster/row_count": accepted, **stored_counts, "skipped_unchanged_file": skipped}
    )

    keys = table.column("record_key")
    distinct = pc.count_distinct(keys).as_py()
    # The counts add up by construction; what could go wrong is a record missing from MongoDB (a
    # write acknowledged but not kept, a collection dropped meanwhile). Asking for every key would
    # cost as much as the store itself on SecantusDB: a sample spread over the file is asked for.
    sampled = keys.take(pa.array(range(0, accepted, max(1, -(-accepted // STORED_SAMPLE))), pa.int64()))
    found = store.count_keys(sampled.to_pylist())
    yield dg.AssetCheckResult(
        check_name=STORED_ONCE,
        passed=counts.total == distinct == accepted and found == len(sampled),
        metadata={
            "accepted": accepted,
            "accounted_by_store": counts.total,
            "sampled_keys": len(sampled),
            "sampled_keys_in_mongodb": found,
        },
    )
    codes = pc.unique(table.column("tm2_code")).to_pylist()
    unknown = sorted(set(codes) - tm2_code_list().codes)
    yield dg.AssetCheckResult(check_name=CODES_VALID, passed=not unknown, metadata={"unknown_codes": unknown})
    dates = table.column("diagnosis_date")
    # ISO yyyy-mm-dd strings order like the dates they name.
    outside = pc.or_(pc.less(dates, EARLIEST_DATE), pc.greater(dates, pipeline.today().isoformat()))
    out_of_range = pc.sum(pc.cast(outside, "int64")).as_py() or 0
    yield dg.AssetCheckResult(
        check_name=DATES_VALID, passed=out_of_range == 0, metadata={"dates_out_of_range": out_of_range}
    )
    yield dg.AssetCheckResult(
        check_name=OTHER_VERSIONS_COVERED,
        passed=behind.count == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "other_versions": len(versions),
            "records_not_in_this_version": behind.count,
            "first_of_them": ", ".join(behind.examples),
        },
    )
