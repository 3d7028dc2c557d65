"""raw_tm2_file: the file's bytes, copied to `$TM2_HOME/files/<sha256>`, and whether they are readable."""

from pathlib import Path

import dagster as dg

from tm2_pipeline.abandoned_runs import tag_run_worker
from tm2_pipeline.assets.refusal import describe, record_refusal
from tm2_pipeline.landing import ContentChanged, copy_by_content, sha256_of_file
from tm2_pipeline.partitions import SHA256_TAG, older_unfinished_run, tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.reading import FileRefused, inspect_tm2_file
from tm2_pipeline.resources.mongo import MongoResource

FILE_READABLE = "file_readable"
CHANGED_AFTER_SEEN = (
    "the file changed after it was hashed for this run (still being written?); nothing was kept: "
    "the landing sensor runs it again once it stops changing, or run `tm2 ingest` again"
)


def concurrent_run_message(other: dg.DagsterRun) -> str:
    return (
        f"another run of this file name was requested first and has not ended (run {other.run_id}, "
        f"{other.status.value.lower()}): this run stopped before reading the file and kept nothing "
        "(two runs of one file name would share its tables); run it again when that run has ended"
    )


class RawTm2FileConfig(dg.Config):
    source_path: str = ""  # the file to ingest; empty means <TM2_LANDING_DIR>/<partition key>


@dg.asset(
    partitions_def=tm2_csv_files,
    io_manager_key="tm2_table_io_manager",
    check_specs=[dg.AssetCheckSpec(FILE_READABLE, asset="raw_tm2_file", blocking=True)],
    description="One landed clinic export: its bytes copied under $TM2_HOME/files, name, size, sha256.",
    group_name="tm2",
)
def raw_tm2_file(
    context: dg.AssetExecutionContext,
    config: RawTm2FileConfig,
    pipeline: PipelineConfig,
    mongo: MongoResource,
):
    path = (
        Path(config.source_path) if config.source_path else Path(pipeline.landing_dir) / context.partition_key
    )
    home = pipeline.home
    tag_run_worker(context.instance, context.run)  # its death would hold the file name a day
    # The queue and `tm2 ingest` look for a run under way before starting one; this closes the gap
    # between their look and the start: the newer of two runs of one name stops here.
    other = older_unfinished_run(context.instance, context.partition_key, context.run.run_id)
    if other is not None:
        raise dg.Failure(description=concurrent_run_message(other), allow_retries=False)
    # The bytes the sensor (or `tm2 ingest`) hashed, or none: a file overwritten or still being
    # uploaded since then is not ingested as it is now (a cut-short row would be stored).
    expected = context.run.tags.get(SHA256_TAG)
    try:
        # Read a block at a time, never whole: an export can be larger than the memory it may use.
        sha256 = sha256_of_file(path)
        if expected is not None and sha256 != expected:
            raise ContentChanged
        copy = home.file_copy(sha256)
        if not copy.exists():
            sha256 = copy_by_content(path, home.files_dir, expected_sha256=expected)
            copy = home.file_copy(sha256)
    except ContentChanged:
        raise dg.Failure(description=CHANGED_AFTER_SEEN, allow_retries=False) from None
    size = copy.stat().st_size

    descriptor = {"file": path.name, "sha256": sha256, "size": size, "copy": str(copy)}
    metadata = {
        "file": path.name,
        "sha256": sha256,
        "size_bytes": size,
        "copy": dg.MetadataValue.path(str(copy)),
    }
    refusal: FileRefused | None = None
    try:
        # Whole-file checks only (encoding, header, binary...): the rows are parsed once, in validation.
        with copy.open("rb") as stream:
            inspect_tm2_file(stream)
    except FileRefused as error:
        refusal = error
        note = record_refusal(
            error, name=path.name, copy=copy, sha256=sha256, home=home, mongo=mongo, run_id=context.run.run_id
        )
        # Dagster's own error names the failed check only; this says why, where runs are watched.
        context.log.error(f"{path.name} refused ({describe(error)}); kept in {note.parent}")
        descriptor.update(refused=error.reason, error=error.message)
        metadata.update(refused=error.reason, error=dg.MetadataValue.path(str(note)))
    yield dg.Output(descriptor, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=FILE_READABLE,
        passed=refusal is None,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"reason": refusal.reason if refusal else "readable"},
        description=describe(refusal) if refusal else "the file decodes and has every required column",
    )
