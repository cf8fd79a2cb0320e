"""Both stores at the active vector version: the configured servers, or the embedded ones under the data
directory (Qdrant's local storage through the one actor that may open it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import ray

from facecluster.engine.embedder import FaceEmbedder
from facecluster.engine.faces import load_embedder, model_version
from facecluster.engine.projection import VectorSpace
from facecluster.runtime import NAMESPACE, init_ray
from facecluster.settings import Settings
from facecluster.store.embedded import local_qdrant_path, mongo_uri
from facecluster.store.meta import MetaStore
from facecluster.store.vectors import QdrantConfig, Vectors, collection_name
from facecluster.store.versions import VersionedVectors, active_space, active_version, trained_versions

if TYPE_CHECKING:  # Qdrant's client loads where it is used: a process that only calls the owner actor skips it
    from facecluster.store.qdrant import QdrantVectors


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
        path=local_qdrant_path(settings),
        collection=collection,
        dim=dim,
    )
    return StoreConfig(mongo, settings.stores.mongo_db, qdrant, settings.stores.store_retries)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class LocalQdrantOwner:
    """The one process that opens Qdrant's local storage; jobs and the API call it by name."""

    def __init__(self, path: str) -> None:
        from qdrant_client import QdrantClient

        self.client = QdrantClient(path=path)
        self.stores: dict[str, QdrantVectors] = {}

    def call(self, config: QdrantConfig, method: str, *args: Any) -> Any:
        store = self.stores.get(config.collection)
        if store is None:
            from facecluster.store.qdrant import QdrantVectors

            store = self.stores[config.collection] = QdrantVectors(config, client=self.client)
        return getattr(store, method)(*args)


def local_qdrant_owner(path: str) -> Any:
    """The owner actor of the local storage at `path`, started when it does not run (it outlives jobs)."""
    name = "facecluster-qdrant-" + hashlib.sha1(path.encode(), usedforsecurity=False).hexdigest()[:12]
    return LocalQdrantOwner.options(  # type: ignore[attr-defined]
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(path)


class OwnedVectors:
    """`Vectors` whose calls run in the `LocalQdrantOwner` actor of the storage folder."""

    def __init__(self, config: QdrantConfig) -> None:
        assert config.path is not None
        self.config = config
        self.owner = local_qdrant_owner(config.path)

    def _call(self, method: str, *args: Any) -> Any:
        return ray.get(self.owner.call.remote(self.config, method, *args))

    def ensure_collection(self) -> None:
        self._call("ensure_collection")

    def upsert(self, ids: Any, vectors: Any, payloads: Any) -> None:
        self._call("upsert", ids, vectors, payloads)

    def delete(self, ids: Any) -> int:
        return int(self._call("delete", ids))

    def ids(self, library: str | None = None) -> set[str]:
        return set(self._call("ids", library))

    def count(self) -> int:
        return int(self._call("count"))

    def fetch(self, ids: Any) -> Any:
        return self._call("fetch", ids)

    def set_payloads(self, updates: Any) -> None:
        self._call("set_payloads", updates)

    def search(self, queries: Any, limit: int, library: str | None = None) -> Any:
        return self._call("search", queries, limit, library)

    def delete_library(self, library: str) -> int:
        return int(self._call("delete_library", library))


def open_vectors(config: QdrantConfig, attempts: int) -> Vectors:
    """A server client of its own, or the single owner of the local storage (Ray must be up)."""
    if config.local:
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
    """The faces and profiles collections of `space`, created when missing; Ray is started when the local
    Qdrant storage needs its owner actor."""
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
