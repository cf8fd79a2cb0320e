"""Labels follow the face: what re-processing a photo does to the faces stored of it."""

from __future__ import annotations

import pytest

from facecluster.ingest.relabel import box_iou, carry_labels

pytestmark = pytest.mark.fast


def old(face_id: str, bbox: list[float], **labels: object) -> dict[str, object]:
    return {"_id": face_id, "bbox": bbox, **labels}


def test_iou() -> None:
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0


def test_new_faces_inherit_from_the_face_they_overlap_best_first() -> None:
    faces = [
        old("a", [0, 0, 100, 100], person_id="per_1", label_source="human", rejected_persons=["per_9"]),
        old("b", [200, 0, 100, 100], cluster_id="clu_1"),
    ]
    # Another detector: slightly different boxes, another order, and a face never seen before.
    result = carry_labels(faces, [[205, 4, 96, 98], [500, 500, 50, 50], [3, 2, 98, 97]])
    assert result.inherited[0] == {
        "person_id": None, "cluster_id": "clu_1", "label_source": None, "rejected_persons": None,
        "person_similarity": None,
    }  # fmt: skip
    assert result.inherited[1] is None
    assert result.inherited[2] is not None and result.inherited[2]["person_id"] == "per_1"
    assert result.inherited[2]["rejected_persons"] == ["per_9"]
    assert sorted(result.dropped) == ["a", "b"] and result.kept == []


def test_one_old_face_passes_its_labels_to_one_new_face() -> None:
    faces = [old("a", [0, 0, 100, 100], person_id="per_1", label_source="human")]
    result = carry_labels(faces, [[0, 0, 100, 100], [10, 10, 90, 90]])
    assert result.inherited[0] is not None and result.inherited[1] is None


def test_human_work_nothing_overlaps_is_kept_and_machine_labels_go() -> None:
    faces = [
        old("named", [0, 0, 100, 100], person_id="per_1", label_source="human"),
        old("rejected", [300, 0, 100, 100], rejected_persons=["per_2"]),
        old("auto", [600, 0, 100, 100], person_id="per_1", label_source="auto"),
        old("clustered", [900, 0, 100, 100], cluster_id="clu_1"),
    ]
    result = carry_labels(faces, [])  # a stricter MIN_FACE_SIZE finds none of them
    assert sorted(result.kept) == ["named", "rejected"]
    assert sorted(result.dropped) == ["auto", "clustered"]


def test_a_weak_overlap_is_not_the_same_face() -> None:
    faces = [old("named", [0, 0, 100, 100], person_id="per_1", label_source="human")]
    result = carry_labels(faces, [[60, 60, 100, 100]])
    assert result.inherited == [None] and result.kept == ["named"]
