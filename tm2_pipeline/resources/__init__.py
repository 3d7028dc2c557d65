"""Dagster resources: the only code that talks to the outside world (MongoDB, OpenMRS)."""
