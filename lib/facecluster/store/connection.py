"""Both stores at the active vector version: the configured servers, or the embedded ones under the data
directory (the Qdrant Edge shards through the one actor that may open them)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from facecluster.deployment import init_ray
from facecluster.engine.embedder import FaceEmbedder
from facecluster.engine.faces import load_embedder, model_version
from facecluster.engine.projection import VectorSpace
from facecluster.settings import Settings
from facecluster.store.embedded import local_vectors_path, mongo_uri
from facecluster.store.meta import MetaStore
from facecluster.store.vectors import Hit, QdrantConfig, Vectors, collection_name
from facecluster.store.versions import VersionedVectors, active_space, active_version, trained_versions


@dataclass(frozen=True)
class StoreConfig:
    mongo_uri: str
    mongo_db: str
    qdrant: QdrantConfig
    retries: int = 5


def resolve_stores(settings: Settings, *, collection: str, dim: int) -> StoreConfig:
    """The configured MongoDB and Qdrant, or the embedded ones under the data directory."""
    mongo = mongo_uri(settings)
    qdrant = QdrantConfig(
        url=settings.stores.qdrant_url,
        api_key=settings.stores.qdrant_api_key.get_secret_value() if settings.stores.qdrant_api_key else None,
        path=local_vectors_path(settings),
        collection=collection,
        dim=dim,
    )
    return StoreConfig(mongo, settings.stores.mongo_db, qdrant, settings.stores.store_retries)


def open_vectors(config: QdrantConfig, attempts: int) -> Vectors:
    """A server client of its own, or the owner of the embedded shards (Ray must be up)."""
    if config.local:
        from facecluster.store.owner import OwnedVectors

        return OwnedVectors(config)
    from facecluster.store.qdrant import QdrantVectors

    return QdrantVectors(config, attempts=attempts)


def open_meta(settings: Settings) -> MetaStore:
    """MongoDB alone (configured, else embedded): no Qdrant, no Ray, no model."""
    return MetaStore(mongo_uri(settings), settings.stores.mongo_db, attempts=settings.stores.store_retries)


def open_stores(settings: Settings) -> tuple[StoreConfig, FaceEmbedder, str]:
    """Store settings for the configured embedder's vectors, the embedder and its version."""
    embedder = load_embedder(settings)
    version = model_version(settings, embedder.spec)
    return (
        resolve_stores(settings, collection=collection_name(version, embedder.dim), dim=embedder.dim),
        embedder,
        version,
    )


#: Profiles a search answers with, at most.
PROFILE_HITS = 5


@dataclass(frozen=True)
class Connection:
    """Both stores of the configured embedder's active vector version, ready to use."""

    config: StoreConfig  # its Qdrant collection holds the embedder's own vectors
    meta: MetaStore
    vectors: Vectors  # the active version's faces (embedder output in, active space out)
    profiles: Vectors  # profile templates, in a collection of their own
    embedder: FaceEmbedder
    space: VectorSpace

    @property
    def version(self) -> str:
        """The active vector version: the embedder version, or it plus a trained head."""
        return self.space.id

    def nearest(
        self, queries: NDArray[np.float32], limit: int, library: str | None = None
    ) -> tuple[list[list[Hit]], list[list[Hit]]]:
        """The `limit` nearest faces (of `library`, or of every library) and the nearest profiles of each
        query (vectors of the active space): on the embedded store, one round trip to its owner."""
        from facecluster.store.owner import OwnedVectors

        profiles = min(limit, PROFILE_HITS)
        if isinstance(self.vectors, OwnedVectors) and isinstance(self.profiles, OwnedVectors):
            asked = [
                (self.vectors, "search", (queries, limit, library)),
                (self.profiles, "search", (queries, profiles)),
            ]
            face_hits, profile_hits = OwnedVectors.together(asked)
            return face_hits, profile_hits
        return self.vectors.search(queries, limit, library), self.profiles.search(queries, profiles)

    @property
    def own_vectors(self) -> Vectors:
        """The embedder's own vectors (the base collection), whichever version is active."""
        return self.vectors.base if isinstance(self.vectors, VersionedVectors) else self.vectors


def space_config(base: QdrantConfig, space: VectorSpace, kind: str = "faces") -> QdrantConfig:
    """The Qdrant collection of one vector version."""
    return replace(base, collection=collection_name(space.id, space.dim, kind), dim=space.dim)


def space_vectors(base: QdrantConfig, space: VectorSpace, attempts: int) -> Vectors:
    """Face vectors of `space`: the base collection, or it and the trained version's written together."""
    vectors = open_vectors(base, attempts)
    if not space.trained:
        return vectors
    return VersionedVectors(vectors, open_vectors(space_config(base, space), attempts), space)


def open_metadata(settings: Settings) -> tuple[StoreConfig, MetaStore, FaceEmbedder, VectorSpace]:
    """MongoDB (indexes created), the embedder and the active vector version, without opening Qdrant:
    enough for a job to start its workers while the vectors open."""
    config, embedder, version = open_stores(settings)
    meta = MetaStore(config.mongo_uri, config.mongo_db, attempts=settings.stores.store_retries)
    meta.ensure_indexes()
    return config, meta, embedder, active_space(meta, version, embedder.dim)


def open_space(base: QdrantConfig, space: VectorSpace, attempts: int) -> Vectors:
    """`space_vectors` with their collections created when missing."""
    vectors = space_vectors(base, space, attempts)
    vectors.ensure_collection()
    return vectors


def open_qdrant(settings: Settings, config: StoreConfig, space: VectorSpace) -> tuple[Vectors, Vectors]:
    """The faces and profiles collections of `space`, created when missing; Ray is started when the embedded
    shards need their owner actor."""
    if config.qdrant.local:
        init_ray(settings)
    vectors = open_space(config.qdrant, space, settings.stores.store_retries)
    profiles = open_vectors(space_config(config.qdrant, space, "profiles"), settings.stores.store_retries)
    profiles.ensure_collection()
    return vectors, profiles


def connect(settings: Settings) -> Connection:
    """Open MongoDB and Qdrant (indexes and collections created) at the active vector version."""
    config, meta, embedder, space = open_metadata(settings)
    return Connection(config, meta, *open_qdrant(settings, config, space), embedder, space)


def current(settings: Settings, stores: Connection) -> Connection:
    """`stores`, or a new connection when another process has switched the active version since."""
    if active_version(stores.meta, stores.space.base) == stores.version:
        return stores
    return connect(settings)


def every_version(stores: Connection, kind: str = "faces") -> list[Vectors]:
    """The `kind` collections (faces or profiles) of every vector version of the configured embedder: its
    own vectors and each trained version's, active or not. Erasure and deletion reach all of them."""
    base, dim = stores.space.base, stores.space.dim
    spaces = [VectorSpace(version, base, dim) for version in (base, *trained_versions(stores.meta, base))]
    return [open_vectors(space_config(stores.config.qdrant, space, kind), stores.config.retries) for space in spaces]
