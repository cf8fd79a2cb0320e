"""Domain decisions as pure functions: what a clustering run considers and assigns, what a human action
does to a face, when an undo is safe, and how clusters are assigned to profiles. No stores, no Ray."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from facecluster.cluster.assignment import AssignOptions, decide_centroid, decide_vote
from facecluster.cluster.methods import UNCLUSTERED, label_members
from facecluster.cluster.run import choose_faces, held_in_photo, next_states
from facecluster.logs import Progress
from facecluster.people.decisions import changed_since, cleared, face_state, labelled, shared_photo
from facecluster.store.vectors import Hit

pytestmark = pytest.mark.fast


def face(face_id: str, quality: float = 0.5, **labels: object) -> dict[str, object]:
    return {"_id": face_id, "image": f"{face_id}.jpg", "quality": {"score": quality}, **labels}


def test_a_run_considers_every_human_label_and_the_best_other_faces() -> None:
    faces = [
        face("a", 0.9),
        face("b", 0.2),
        face("h", 0.1, person_id="per_1", label_source="human"),
        face("c", 0.7),
        face("auto", 0.8, person_id="per_1", label_source="auto"),
    ]
    human, others = choose_faces(faces, min_quality=0.3, max_faces=3)
    assert [f["_id"] for f in human] == ["h"]  # below the quality gate, and still a known person's face
    assert [f["_id"] for f in others] == ["a", "auto"]  # best first, 3 in all with the human one
    assert [f["_id"] for f in choose_faces(faces, 0.0, None)[1]] == ["a", "auto", "c", "b"]


def test_after_a_run_human_labels_stay_and_machine_labels_lapse_unless_renewed() -> None:
    faces = [
        face("h", person_id="per_1", label_source="human", cluster_id="clu_old"),
        face("auto", person_id="per_2", label_source="auto", person_similarity=0.8),
        face("renewed", person_id="per_2", label_source="auto"),
        face("clustered", cluster_id="clu_old"),
    ]
    states = next_states(faces, {"renewed": ("per_2", 0.91)}, {"clu_new": ["clustered"]})
    # Every face the run considered is no longer new (`pending`) for an incremental run.
    assert states["h"] == {"cluster_id": None, "person_id": "per_1", "label_source": "human", "pending": None}
    assert states["auto"]["person_id"] is None and states["auto"]["label_source"] is None
    assert states["renewed"] == {
        "cluster_id": None, "person_id": "per_2", "label_source": "auto", "person_similarity": 0.91, "pending": None
    }  # fmt: skip
    assert states["clustered"]["cluster_id"] == "clu_new"


def test_labelling_a_face_lifts_its_rejection_of_that_person_only() -> None:
    rejecting = face("f", cluster_id="clu_1", rejected_persons=["per_1", "per_2"])
    state = labelled(rejecting, "per_1")
    assert state["person_id"] == "per_1" and state["label_source"] == "human" and state["cluster_id"] is None
    assert state["rejected_persons"] == ["per_2"]


def test_not_this_person_is_remembered_once() -> None:
    state = cleared(face("f", person_id="per_1", rejected_persons=["per_1"]), reject="per_1")
    assert state["person_id"] is None and state["rejected_persons"] == ["per_1"]
    assert cleared(face("g"), reject="per_3")["rejected_persons"] == ["per_3"]


def test_undo_is_safe_only_while_the_faces_are_as_the_change_left_them() -> None:
    after = {"f": labelled(face("f"), "per_1"), "g": labelled(face("g"), "per_1")}
    now = [{**face("f"), **after["f"]}, {**face("g"), **after["g"]}]
    assert changed_since(after, now) is None
    now[1]["person_id"] = "per_9"  # someone moved g meanwhile
    assert changed_since(after, now) == "g"
    assert set(face_state(now[0])) == {
        "person_id",
        "label_source",
        "cluster_id",
        "rejected_persons",
        "person_similarity",
    }


def hit(user: str, similarity: float) -> Hit:
    return Hit(f"pt-{user}", similarity, {"user_id": user})


def test_centroid_assignment_takes_the_best_profile_above_the_threshold() -> None:
    chosen = decide_centroid("clu_1", [hit("alice", 0.82), hit("bob", 0.61)], 0.7, faces=5)
    assert chosen.user_id == "alice" and chosen.runner_up == "bob" and chosen.margin == pytest.approx(0.21)
    refused = decide_centroid("clu_1", [hit("alice", 0.65)], 0.7, faces=5)
    assert refused.user_id is None and "below threshold" in refused.reason
    assert decide_centroid("clu_1", [], 0.7, faces=5).reason == "no profiles"


def test_vote_needs_a_majority_and_a_margin() -> None:
    options = AssignOptions(strategy="vote", threshold=0.6, min_share=0.5, min_margin=0.2)
    clear = decide_vote("clu_1", [[hit("alice", 0.8)]] * 3 + [[hit("bob", 0.7)]], options)
    assert clear.user_id == "alice" and clear.share == 0.75 and clear.margin == 0.5
    split = decide_vote("clu_1", [[hit("alice", 0.8)]] * 2 + [[hit("bob", 0.7)]] * 2, options)
    assert split.user_id is None and "below min_share" not in split.reason and "margin" in split.reason
    weak = decide_vote("clu_1", [[hit("alice", 0.5)]] * 4, options)
    assert weak.user_id is None and weak.share == 0.0


def test_what_the_other_faces_of_a_photo_hold_is_barred() -> None:
    context = [
        {"_id": "a", "image": "p1", "person_id": "per_1", "cluster_id": None},
        {"_id": "b", "image": "p1", "person_id": None, "cluster_id": "clu_1"},
        {"_id": "c", "image": "p2", "person_id": "per_2", "cluster_id": None},
    ]
    targets = [{"_id": "a", "image": "p1"}, {"_id": "x", "image": "p1"}, {"_id": "y", "image": "p3"}]
    assert held_in_photo(context, targets, "person_id") == [set(), {"per_1"}, set()]
    assert held_in_photo(context, targets, "cluster_id") == [{"clu_1"}, {"clu_1"}, set()]


def test_a_person_never_gets_two_faces_of_one_photo() -> None:
    members = [{"_id": "m1", "image": "p1"}, {"_id": "m2", "image": "p2"}]
    assert shared_photo([{"_id": "j1", "image": "p3"}], members) is None
    assert shared_photo([{"_id": "j1", "image": "p2"}], members) == "p2"
    assert shared_photo([{"_id": "m1", "image": "p1"}], members) is None  # a face already theirs
    assert shared_photo([{"_id": "j1", "image": "p9"}, {"_id": "j2", "image": "p9"}], []) == "p9"


def test_label_members_groups_faces_by_label_in_one_pass() -> None:
    labels = np.array([2, UNCLUSTERED, 0, 2, 0, UNCLUSTERED, 1])
    assert [m.tolist() for m in label_members(labels)] == [[2, 4], [6], [0, 3]]
    assert label_members(np.full(3, UNCLUSTERED)) == []


def test_a_long_step_reports_itself_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="facecluster.progress")
    with Progress("cluster L", interval_s=0.05) as progress:
        progress.step("reading faces")
        assert list(progress.counted(range(3))) == [0, 1, 2]
        time.sleep(0.2)
        progress.step("writing labels")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "cluster L: reading faces"
    assert any(line.startswith("cluster L: reading faces, 3 done, ") for line in lines)
    assert "cluster L: writing labels" in lines
    assert progress.seconds["reading faces"] >= 0.2 and "writing labels" in progress.seconds
    reported: list[str] = []  # a job's progress: its record hears each line instead of the log
    with Progress("cluster L", interval_s=0.05, report=reported.append) as progress:
        progress.step("reading faces")
        time.sleep(0.2)
    assert reported[0] == "cluster L: reading faces" and reported[1].startswith("cluster L: reading faces, ")
