"""The four assets of the lineage, one module each."""
