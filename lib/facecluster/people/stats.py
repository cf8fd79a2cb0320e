"""Library statistics: persons, clusters, unclustered faces, faces per person, multi-person photos."""

from __future__ import annotations

from typing import Any

from facecluster.store.meta import MetaStore

#: Faces-per-person histogram bins: (label, smallest, largest).
BINS = (("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-9", 5, 9), ("10-19", 10, 19), ("20-49", 20, 49), ("50+", 50, None))


def library_stats(meta: MetaStore, library: str | None = None) -> dict[str, Any]:
    """Counts by aggregation in MongoDB: no face document is loaded here but those with a person."""
    counts = meta.identity_counts(library)
    sizes = counts.sizes
    return {
        "library": library,
        # A face has a person, else a cluster, else neither.
        "faces": sum(sizes.values()) + counts.unclustered,
        "persons": sum(1 for who in sizes if not who.startswith("clu_")),
        "clusters": sum(1 for who in sizes if who.startswith("clu_")),
        "unclustered": counts.unclustered,
        "human_labelled": counts.sources.get("human", 0),
        "auto_assigned": counts.sources.get("auto", 0),
        "faces_per_person": {
            label: sum(1 for n in sizes.values() if n >= low and (high is None or n <= high))
            for label, low, high in BINS
        },
        "multi_person_images": counts.multi_identity_photos,
    }
