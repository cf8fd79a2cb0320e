"""Both stores at the active vector version: the configured servers, or the embedded ones under the data
directory (the Qdrant Edge shards through the one actor that may open them). Three ways in, each named for
what it opens: `open_meta` (MongoDB alone), `open_collection` (one Qdrant collection of one vector version)
and `connect` (both stores, at the active version)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from facecluster.deployment import init_ray
from facecluster.engine.faces import load_embedder, model_version
from facecluster.engine.projection import VectorSpace
from facecluster.engine.registry import EmbedderSpec
from facecluster.settings import Settings
from facecluster.store.embedded import local_vectors_path, mongo_uri
from facecluster.store.meta import MetaStore
from facecluster.store.vectors import Hit, QdrantConfig, Vectors, collection_name
from facecluster.store.versions import VersionedVectors, active_space, active_version, trained_versions

#: Profiles a search answers with, at most.
PROFILE_HITS = 5


@dataclass(frozen=True)
class StoreConfig:
    mongo_uri: str
    mongo_db: str
    qdrant: QdrantConfig  # its collection holds the embedder's own vectors
    retries: int = 5


def open_meta(settings: Settings) -> MetaStore:
    """MongoDB alone (configured, else embedded): no Qdrant, no Ray, no model."""
    return MetaStore(mongo_uri(settings), settings.stores.mongo_db, attempts=settings.stores.store_retries)


def open_collection(base: QdrantConfig, space: VectorSpace, kind: str = "faces", *, attempts: int = 5) -> Vectors:
    """One Qdrant collection: the `kind` (faces or profiles) of vector version `space`, created when missing;
    `base` names the embedder's own. A server client of its own, or the owner of the embedded shards (Ray
    must be up)."""
    config = replace(base, collection=collection_name(space.id, space.dim, kind), dim=space.dim)
    vectors: Vectors
    if config.local:
        from facecluster.store.owner import OwnedVectors

        vectors = OwnedVectors(config)
    else:
        from facecluster.store.qdrant import QdrantVectors

        vectors = QdrantVectors(config, attempts=attempts)
    vectors.ensure_collection()
    return vectors


@dataclass(frozen=True)
class Connection:
    """Both stores of the configured embedder's active vector version. MongoDB is open; each Qdrant
    collection opens when first used (on the embedded default, Ray starts then)."""

    settings: Settings
    config: StoreConfig
    meta: MetaStore
    embedder: EmbedderSpec  # the registry's entry: thresholds and calibration, no model
    space: VectorSpace

    @property
    def version(self) -> str:
        """The active vector version: the embedder version, or it plus a trained head."""
        return self.space.id

    def collection(self, space: VectorSpace, kind: str = "faces") -> Vectors:
        """`open_collection` of this connection's Qdrant, Ray started where its shards need their owner."""
        if self.config.qdrant.local:
            init_ray(self.settings)
        return open_collection(self.config.qdrant, space, kind, attempts=self.config.retries)

    @cached_property
    def vectors(self) -> Vectors:
        """The active version's faces: embedder output in, active space out."""
        own = self.collection(VectorSpace(self.space.base, self.space.base, self.space.dim))
        return VersionedVectors(own, self.collection(self.space), self.space) if self.space.trained else own

    @cached_property
    def profiles(self) -> Vectors:
        """Profile templates of the active version, in a collection of their own."""
        return self.collection(self.space, "profiles")

    @property
    def own_vectors(self) -> Vectors:
        """The embedder's own vectors (the base collection), whichever version is active."""
        return self.vectors.base if isinstance(self.vectors, VersionedVectors) else self.vectors

    def at(self, space: VectorSpace) -> Connection:
        """The same stores at another vector version."""
        return replace(self, space=space)

    def nearest(
        self, queries: NDArray[np.float32], limit: int, library: str | None = None
    ) -> tuple[list[list[Hit]], list[list[Hit]]]:
        """The `limit` nearest faces (of `library`, or of every library) and the nearest profiles of each
        query (vectors of the active space): on the embedded store, one round trip to its owner."""
        from facecluster.store.owner import OwnedVectors

        few = min(limit, PROFILE_HITS)
        faces = self.vectors.active if isinstance(self.vectors, VersionedVectors) else self.vectors
        if isinstance(faces, OwnedVectors) and isinstance(self.profiles, OwnedVectors):
            asked = [(faces, "search", (queries, limit, library)), (self.profiles, "search", (queries, few))]
            face_hits, profile_hits = OwnedVectors.together(asked)
            return face_hits, profile_hits
        return faces.search(queries, limit, library), self.profiles.search(queries, few)

    def every_version(self, kind: str = "faces") -> list[Vectors]:
        """The `kind` collections (faces or profiles) of every vector version of the configured embedder: its
        own vectors and each trained version's, active or not. Erasure and deletion reach all of them."""
        base, dim = self.space.base, self.space.dim
        versions = (base, *trained_versions(self.meta, base))
        return [self.collection(VectorSpace(version, base, dim), kind) for version in versions]


def connect(settings: Settings) -> Connection:
    """MongoDB (indexes created) and the Qdrant collections at the active vector version, opened as used."""
    embedder = load_embedder(settings)  # the ONNX signature gives the dimension; its session is cached
    version = model_version(settings, embedder.spec)
    qdrant = QdrantConfig(
        url=settings.stores.qdrant_url,
        api_key=settings.stores.qdrant_api_key.get_secret_value() if settings.stores.qdrant_api_key else None,
        path=local_vectors_path(settings),
        collection=collection_name(version, embedder.dim),
        dim=embedder.dim,
    )
    config = StoreConfig(mongo_uri(settings), settings.stores.mongo_db, qdrant, settings.stores.store_retries)
    meta = MetaStore(config.mongo_uri, config.mongo_db, attempts=config.retries)
    meta.ensure_indexes()
    return Connection(settings, config, meta, embedder.spec, active_space(meta, version, embedder.dim))


def current(stores: Connection) -> Connection:
    """`stores`, or the same stores at the active version when another process has switched it since."""
    if active_version(stores.meta, stores.space.base) == stores.version:
        return stores
    return stores.at(active_space(stores.meta, stores.space.base, stores.space.dim))
