"""raw_tm2_file: the file's bytes, copied to `$TM2_HOME/files/<sha256>`, and whether they are readable."""

import hashlib
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from tm2_pipeline.landing import archive, write_error_note
from tm2_pipeline.partitions import tm2_csv_files
from tm2_pipeline.pipeline_config import PipelineConfig
from tm2_pipeline.reading import FileRefused, read_tm2_bytes
from tm2_pipeline.resources.mongo import MongoResource

FILE_READABLE = "file_readable"


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
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    copy = home.file_copy(sha256)
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)

    descriptor = {"file": path.name, "sha256": sha256, "size": len(data), "copy": str(copy)}
    refusal: FileRefused | None = None
    try:
        read_tm2_bytes(data)
    except FileRefused as error:
        refusal = error
        descriptor.update(refused=error.reason, error=error.message)
        # The refused file is kept in failed/ with its reason; the source is never deleted here.
        archive(path, home.failed_dir, sha256, keep_source=True)
        write_error_note(home.failed_dir, path.name, f"refused ({error.reason}): {error.message}")
        mongo.ingestions().record_outcome(
            file=path.name,
            sha256=sha256,
            status="refused",
            error=error.message,
            at=datetime.now(UTC),
            run_id=context.run.run_id,
            size=len(data),
        )

    metadata = {
        "file": path.name,
        "sha256": sha256,
        "size_bytes": len(data),
        "copy": dg.MetadataValue.path(str(copy)),
    }
    if refusal:
        metadata["refused"] = refusal.reason
        metadata["error"] = dg.MetadataValue.md(
            f"**Refused** ({refusal.reason}): {refusal.message}\n\n"
            f"Details: `{home.failed_dir / (path.name + '.error.txt')}`"
        )
    yield dg.Output(descriptor, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=FILE_READABLE,
        passed=refusal is None,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"reason": refusal.reason if refusal else "readable"},
        description=f"{refusal.reason}: {refusal.message}"
        if refusal
        else "the file decodes and has every required column",
    )
