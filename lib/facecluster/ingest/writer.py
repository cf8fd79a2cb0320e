"""The ingest's writer actors. They load no model and, on the embedded default, import no Qdrant client
(their vectors go through the local storage's owner actor), so they start quickly beside the models."""

from __future__ import annotations

from facecluster.engine.projection import VectorSpace
from facecluster.ingest.stages import Batch, IngestContext, write_batch
from facecluster.store.connection import open_space
from facecluster.store.vectors import QdrantConfig
from facecluster.store.versions import active_space, active_version


class Writer:
    """Stores the model actors' batches: vectors in Qdrant, faces and image status in MongoDB
    (`stages.write_batch`), in the active vector version even when it switches during the ingest."""

    def __init__(self, ctx: IngestContext, qdrant: QdrantConfig, space: VectorSpace) -> None:
        self.ctx = ctx
        self.qdrant = qdrant
        self.meta = ctx.open_meta()
        self.space = space
        self.vectors = open_space(qdrant, space, ctx.settings.stores.store_retries)

    def __call__(self, batch: Batch) -> Batch:
        if active_version(self.meta, self.space.base) != self.space.id:  # switched while the ingest runs
            self.space = active_space(self.meta, self.space.base, self.space.dim)
            self.vectors = open_space(self.qdrant, self.space, self.ctx.settings.stores.store_retries)
        return write_batch(batch, self.ctx, self.meta, self.vectors)
