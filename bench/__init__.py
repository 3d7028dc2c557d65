"""Benchmarks: synthetic TM2 exports (`generate`) and the stage-by-stage measurements (`run`)."""
