"""Library statistics: persons, clusters, unclustered faces, faces per person, multi-person photos."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from facecluster.store.meta import MetaStore

#: Faces-per-person histogram bins: (label, smallest, largest).
BINS = (("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-9", 5, 9), ("10-19", 10, 19), ("20-49", 20, 49), ("50+", 50, None))


def library_stats(meta: MetaStore, library: str | None = None) -> dict[str, Any]:
    faces = meta.faces_in(library, ["image", "library", "person_id", "cluster_id", "label_source"])
    persons = Counter(f["person_id"] for f in faces if f.get("person_id"))
    clusters = Counter(f["cluster_id"] for f in faces if f.get("cluster_id") and not f.get("person_id"))
    identities: dict[tuple[str, str], set[str]] = defaultdict(set)
    for face in faces:
        who = face.get("person_id") or face.get("cluster_id")
        if who:
            identities[(face["library"], face["image"])].add(who)
    sizes = list(persons.values()) + list(clusters.values())
    return {
        "library": library,
        "faces": len(faces),
        "persons": len(persons),
        "clusters": len(clusters),
        "unclustered": sum(1 for f in faces if not f.get("person_id") and not f.get("cluster_id")),
        "human_labelled": sum(1 for f in faces if f.get("label_source") == "human"),
        "auto_assigned": sum(1 for f in faces if f.get("label_source") == "auto"),
        "faces_per_person": {
            label: sum(1 for n in sizes if n >= low and (high is None or n <= high)) for label, low, high in BINS
        },
        "multi_person_images": sum(1 for who in identities.values() if len(who) > 1),
    }
