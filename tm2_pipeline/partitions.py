"""One dynamic partition per landed file name."""

import dagster as dg

# Dynamic partitions are global to a Dagster instance: the name must be unique to this project.
tm2_csv_files = dg.DynamicPartitionsDefinition(name="tm2_csv_files")


def partition_key_problem(name: str) -> str | None:
    """Why a file name cannot be a partition key (the UI breaks on commas and `...`), or None."""
    if "," in name or "..." in name or any(ord(ch) < 32 for ch in name):
        return (
            f"the file name {name!r} cannot be used: rename it without commas, '...' or control characters "
            "(each file is a partition of the Dagster assets, and the UI cannot address such names)"
        )
    return None
