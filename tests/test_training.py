"""Triplet fine-tuning: the loss and the head by hand, then real training on real embeddings with
Ray Train, the re-projection with Ray Data, the atomic switch and the rollback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facecluster.engine.faces import FaceEngine
from facecluster.engine.projection import apply_head, unit, weights_from_bytes, weights_to_bytes
from facecluster.settings import Settings
from facecluster.store.versions import NotEnoughLabels
from facecluster.train.trainer import HeadNet, split_persons, triplet_loss, validation_loss


def _embeddings(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


@pytest.mark.fast
def test_triplet_loss_by_hand() -> None:
    # Person 0 at angle 0 and 60°, person 1 at 90° and 180°: cosine distances 0.5 (positive pairs)
    # and, from the first face, 1 and 2 to the negatives.
    e = _embeddings([1, 0], [0.5, np.sqrt(3) / 2], [0, 1], [-1, 0])
    labels = torch.tensor([0, 0, 1, 1])
    hard = triplet_loss(e, labels, 0.2, "batch-hard")
    # Anchors: 0: d_ap .5, nearest negative (face 2) 1 → 0; 1: .5 vs d(1,2)=1-.866 → .5-.134+.2;
    # 2: d_ap 1 vs d(2,1)=.134 → 1.066; 3: d_ap 1 vs d(3,1)=1.5 → 0.
    expected = (0 + (0.5 - (1 - np.sqrt(3) / 2) + 0.2) + (1 - (1 - np.sqrt(3) / 2) + 0.2) + 0) / 4
    assert float(hard) == pytest.approx(expected, abs=1e-5)
    # Semi-hard: the nearest negative farther than the positive. Anchor 1 now meets face 3 (1.5) → 0;
    # anchor 2 has none farther than its positive (1.0), so it keeps the hardest, as above.
    semi = triplet_loss(e, labels, 0.2, "semi-hard")
    assert float(semi) == pytest.approx((1 - (1 - np.sqrt(3) / 2) + 0.2) / 4, abs=1e-5)


@pytest.mark.fast
def test_head_starts_as_identity_and_numpy_matches_torch() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 16)).astype(np.float32)
    net = HeadNet(16, 32)
    assert np.allclose(apply_head(net.weights(), x), unit(x), atol=1e-6)
    with torch.no_grad():
        net.fc2.weight.normal_()
    weights = weights_from_bytes(weights_to_bytes(net.weights()))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.allclose(apply_head(weights, x), expected, atol=1e-5)
    assert np.allclose(HeadNet.from_weights(weights)(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-5)


@pytest.mark.fast
def test_split_is_by_person_and_needs_enough_persons() -> None:
    labels = [name for name in "abcdefghij" for _ in range(6)] + ["k"] * 2
    train, val = split_persons(labels, min_faces=5, validation_share=0.2, seed=0)
    train_names, val_names = {labels[i] for i in train}, {labels[i] for i in val}
    assert not train_names & val_names and len(val_names) == 2 and len(train_names) == 8
    assert "k" not in train_names | val_names  # too few faces
    with pytest.raises(NotEnoughLabels, match="at least 4 labelled persons"):
        split_persons(labels[:18], min_faces=5, validation_share=0.2, seed=0)


def _library(lfw_dir: Path, target: Path, persons: int, photos: int) -> list[str]:
    names = sorted(p.name for p in (lfw_dir / "images").iterdir() if len(list(p.glob("*.jpg"))) >= photos)[:persons]
    for name in names:
        (target / name).mkdir(parents=True)
        for path in sorted((lfw_dir / "images" / name).glob("*.jpg"))[:photos]:
            shutil.copy(path, target / name / path.name)
    return names


@pytest.mark.usefixtures("ray_cluster")
def test_train_reproject_switch_and_rollback(
    store_settings: Settings, engine: FaceEngine, lfw_dir: Path, tmp_path: Path
) -> None:
    from facecluster.cluster.commands import run_cluster
    from facecluster.engine.analysis import analyze_uploads, profile_face
    from facecluster.engine.quality import ProfileChecks
    from facecluster.eval.accuracy import labelled_faces
    from facecluster.ingest.pipeline import run_ingest
    from facecluster.people.profiles import ProfileStore
    from facecluster.store.connection import connect
    from facecluster.store.versions import active_version, load_space
    from facecluster.train.job import activate, labelled_vectors, reproject, run_rollback, run_train

    settings = store_settings.updated(heads_dir=tmp_path / "heads")
    folder = tmp_path / "photos"
    names = _library(lfw_dir, folder, persons=16, photos=8)
    run_ingest(settings, str(folder), library="family")
    stores = connect(settings)
    base = stores.version
    truth = labelled_faces(stores.meta, "family")
    stores.meta.update_faces([(face, {"person_id": name, "label_source": "human"}) for face, name in truth.items()])
    photo = sorted((folder / names[0]).glob("*.jpg"))[0].read_bytes()
    face = profile_face(analyze_uploads(engine, [photo])[0], ProfileChecks(20, 0.5, 0.0), engine.min_confidence)
    ProfileStore(stores.meta, stores.profiles, stores.space).enrol("first.user", face, photo, create=True)

    # Loss falls on the labelled persons; the checkpoint is the recorded version, not yet active.
    report = run_train(settings, epochs=4, margin=0.3, min_faces=5, switch=False)
    assert not report.switched and report.previous == base and report.version.startswith(base + "+head-")
    assert report.validation_persons == 3 and report.persons == 13 and 1 <= report.best_epoch <= 4
    assert active_version(stores.meta, base) == base
    ids, raw, labels = labelled_vectors(stores, None)
    checkpoint = weights_from_bytes((Path(report.checkpoint) / "head.npz").read_bytes())
    assert all(np.array_equal(checkpoint[k], v) for k, v in load_space(stores.meta, report.version).weights.items())
    persons = torch.from_numpy(np.unique(labels, return_inverse=True)[1])
    loss_before = validation_loss(HeadNet(raw.shape[1], 256), torch.tensor(raw), persons, 0.3)
    assert validation_loss(HeadNet.from_weights(checkpoint), torch.tensor(raw), persons, 0.3) < loss_before

    # Activating it re-projects every face and profile, then switches in one write.
    activated = activate(settings, report.version)
    faces = stores.meta.db.faces.count_documents({})
    assert activated == {"version": report.version, "previous": base, "reprojected": faces, "profiles": 1}

    # The active version serves reads: vectors are the embedder's through the checkpointed head.
    trained = connect(settings)
    assert trained.version == report.version == active_version(trained.meta, base)
    assert np.allclose(trained.vectors.fetch(ids), apply_head(checkpoint, raw), atol=1e-5)
    hits = trained.profiles.search(trained.space.project(face.vector[None, :]), 1)
    assert hits[0][0].payload["user_id"] == "first.user" and hits[0][0].similarity > 0.99
    summary = run_cluster(settings, "family", stores=trained)
    assert summary.persons == len(names)

    # New photos after the switch land in both versions; re-projection is idempotent.
    (folder / names[0] / "copy.jpg").write_bytes(photo)
    run_ingest(settings, str(folder), library="family")
    assert stores.meta.db.faces.count_documents({}) == faces + 1
    faces += 1
    assert trained.vectors.count() == faces
    before = trained.vectors.fetch(ids)
    assert reproject(settings, trained, trained.space) == (faces, 1)
    assert trained.vectors.count() == faces and np.allclose(trained.vectors.fetch(ids), before, atol=1e-6)

    # Rollback returns to the embedder's own vectors, which never stopped being written.
    assert run_rollback(settings) == {"version": base, "previous": report.version, "reprojected": 0, "profiles": 0}
    back = connect(settings)
    assert back.version == base and back.vectors.count() == faces
    assert np.allclose(unit(back.vectors.fetch(ids)), unit(raw), atol=1e-5)

    # A user erased while the trained version is active stays erased after a rollback, and deleting the
    # library reaches the faces collections of both versions.
    from facecluster.people.erasure import delete_library, erase

    assert activate(settings, report.version)["version"] == report.version
    erased = erase(connect(settings), actor="test", user_id="first.user")
    assert erased["qdrant"]["profile_points"] == 2 and erased["mongodb"]["profiles"] == 1
    run_rollback(settings)
    back = connect(settings)
    assert back.version == base and back.profiles.search(back.space.project(face.vector[None, :]), 1) == [[]]
    deleted = delete_library(back, "family", actor="test")
    assert deleted["qdrant"]["face_points"] == 2 * faces and deleted["mongodb"]["faces"] == faces
