"""Accuracy harnesses and speed benchmarks."""

#: The runs of `facecluster bench ingest`, in the order they run (facecluster.eval.bench.bench_ingest).
INGEST_RUNS = ("c", "cw", "a", "a2", "b")
