"""One dynamic partition per landed file name."""

import dagster as dg

from tm2_pipeline.landing import MAX_NAME_BYTES

# Dynamic partitions are global to a Dagster instance: the name must be unique to this project.
tm2_csv_files = dg.DynamicPartitionsDefinition(name="tm2_csv_files")


def partition_key_problem(name: str) -> str | None:
    """Why a file name cannot be a partition key, or None: the UI breaks on commas and `...`, Dagster
    stores keys as UTF-8 text, and the files named after it need room (landing.MAX_NAME_BYTES)."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return (
            f"the file name {name!r} is not valid UTF-8 text: rename it (each file is a partition of the "
            "Dagster assets, whose names are stored as text)"
        )
    if size > MAX_NAME_BYTES:
        return (
            f"the file name {name!r} is {size} bytes long in UTF-8: rename it to at most {MAX_NAME_BYTES} "
            "(the files the pipeline names after it must fit the 255-byte limit of file names)"
        )
    if "," in name or "..." in name or any(ord(ch) < 32 for ch in name):
        return (
            f"the file name {name!r} cannot be used: rename it without commas, '...' or control characters "
            "(each file is a partition of the Dagster assets, and the UI cannot address such names)"
        )
    return None
