"""The ingest's writer actors. They load no model and, on the embedded default, import no Qdrant client
(their vectors go through the local storage's owner actor), so they start quickly beside the models."""

from __future__ import annotations

from facecluster.engine.projection import VectorSpace
from facecluster.engine.registry import EmbedderSpec
from facecluster.ingest.stages import Batch, IngestContext, write_batch
from facecluster.store.connection import Connection, StoreConfig, current


class Writer:
    """Stores the model actors' batches: vectors in Qdrant, faces and image status in MongoDB
    (`stages.write_batch`), in the active vector version even when it switches during the ingest."""

    def __init__(self, ctx: IngestContext, config: StoreConfig, embedder: EmbedderSpec, space: VectorSpace) -> None:
        self.ctx = ctx
        self.stores = Connection(ctx.settings, config, ctx.open_meta(), embedder, space)

    def __call__(self, batch: Batch) -> Batch:
        self.stores = current(self.stores)  # the version may switch while the ingest runs
        return write_batch(batch, self.ctx, self.stores.meta, self.stores.vectors)
