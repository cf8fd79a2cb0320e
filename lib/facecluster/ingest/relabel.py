"""Labels follow the face, not its id: when a photo is processed again (another detector, a changed file,
`--force`), each new face takes the labels of the old face it overlaps, and human work is never dropped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from facecluster.store.documents import LABEL_FIELDS

#: A new face inherits an old face's labels when their boxes overlap at least this much.
MIN_IOU = 0.5


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `[x, y, w, h]` boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    width = min(ax + aw, bx + bw) - max(ax, bx)
    height = min(ay + ah, by + bh) - max(ay, by)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (aw * ah + bw * bh - inter)


def is_human_work(face: Mapping[str, Any]) -> bool:
    """A face whose labels a person made: a named face, or a "not this person"."""
    return bool((face.get("label_source") == "human" and face.get("person_id")) or face.get("rejected_persons"))


def is_erased(box: Sequence[float], tombstones: Sequence[Sequence[float] | None]) -> bool:
    """Whether a detected face is one a person had erased: its photo was erased whole (a tombstone without
    a box), or its box overlaps an erased face's box as much as a re-detection would."""
    return any(tomb is None or box_iou(box, tomb) >= MIN_IOU for tomb in tombstones)


@dataclass
class Relabelling:
    """What re-processing a photo does to its stored faces."""

    #: For each new face (by position), the labels it inherits, or None.
    inherited: list[dict[str, Any] | None]
    #: Old faces no new face replaces that hold human work: kept as they are, marked not re-detected.
    kept: list[str] = field(default_factory=list)
    #: Old faces that go (replaced by a new face, or machine-labelled and not found again).
    dropped: list[str] = field(default_factory=list)


def carry_labels(old: Sequence[Mapping[str, Any]], new_boxes: Sequence[Sequence[float]]) -> Relabelling:
    """Pair old faces with new boxes greedily, best overlap first (IoU ≥ `MIN_IOU`); each new face inherits
    its partner's labels. Old faces without a partner are kept when they hold human work, else dropped."""
    pairs = sorted(
        (
            (box_iou(face["bbox"], box), o, n)
            for o, face in enumerate(old)
            if face.get("bbox") is not None
            for n, box in enumerate(new_boxes)
        ),
        key=lambda pair: -pair[0],
    )
    inherited: list[dict[str, Any] | None] = [None] * len(new_boxes)
    partnered: set[int] = set()
    for iou, o, n in pairs:
        if iou < MIN_IOU:
            break
        if o in partnered or inherited[n] is not None:
            continue
        partnered.add(o)
        inherited[n] = {name: old[o].get(name) for name in LABEL_FIELDS}
    result = Relabelling(inherited)
    for o, face in enumerate(old):
        if o in partnered or not is_human_work(face):
            result.dropped.append(str(face["_id"]))
        else:
            result.kept.append(str(face["_id"]))
    return result
