"""One dynamic partition per landed file name."""

import dagster as dg

# Dynamic partitions are global to a Dagster instance: the name must be unique to this project.
tm2_csv_files = dg.DynamicPartitionsDefinition(name="tm2_csv_files")
