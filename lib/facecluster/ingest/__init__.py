"""Photo sources, the per-batch stages and the Ray Data ingest pipeline."""
