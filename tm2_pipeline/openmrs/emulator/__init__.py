"""A small OpenMRS emulator (Starlette): the REST endpoints this pipeline uses and FHIR2's R4 Condition
endpoints (read, create, update in place, search with paging; `fhir.py`), with injectable faults.

It is the local sandbox behind `tm2 ingest` when no OPENMRS_BASE_URL is set, and the server the
integration tests talk to over real HTTP.
"""
