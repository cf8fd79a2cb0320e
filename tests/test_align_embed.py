"""Alignment and embedding on real photos, and the bring-your-own FaceNet ONNX path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facecluster.engine.align import ARCFACE_TEMPLATE, crop_faces, crop_matrix, similarity_transform
from facecluster.engine.embedder import normalize_crops
from facecluster.engine.faces import FaceEngine, ModelFileMissing, load_embedder
from facecluster.engine.registry import load_registry
from facecluster.eval.accuracy import enrolment_separation
from facecluster.settings import Settings

from .conftest import load


@pytest.mark.fast
def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ARCFACE_TEMPLATE @ rotation.T + shift
    matrix = similarity_transform(ARCFACE_TEMPLATE, moved)
    assert np.allclose(matrix[:, :2], rotation, atol=1e-9)
    assert np.allclose(matrix[:, 2], shift, atol=1e-9)


@pytest.fixture(scope="module")
def enrolment(engine: FaceEngine, photos_dir: Path) -> dict[Path, np.ndarray]:
    """The vector of the largest face of every enrolment photo."""
    vectors = {}
    for path in sorted((photos_dir / "enrol").rglob("*.jp*g")):
        faces = engine.analyze([load(path)])[0]
        vectors[path] = max(faces, key=lambda f: f.detection.size).embedding
    return vectors


def test_aligned_crop_is_upright_and_on_the_template(engine: FaceEngine, photos_dir: Path) -> None:
    image = load(photos_dir / "enrol" / "biden" / "biden.jpg")
    face = max(engine.detector.detect([image])[0], key=lambda f: f.size)
    crop = crop_faces(image, [face], 112, "arcface")
    assert crop.shape == (1, 112, 112, 3) and crop.dtype == np.uint8
    matrix = crop_matrix(face, 112, "arcface")
    moved = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(moved - ARCFACE_TEMPLATE).max() < 8.0  # landmarks land on the template
    assert moved[0, 0] < moved[1, 0] and moved[0, 1] < moved[2, 1] < moved[3, 1]  # eyes, nose, mouth upright


def test_vectors_are_unit_length_128d(enrolment: dict[Path, np.ndarray]) -> None:
    for vector in enrolment.values():
        assert vector.shape == (128,) and vector.dtype == np.float32
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_enrolment_pairs_are_split_by_the_calibrated_threshold(engine: FaceEngine, photos_dir: Path) -> None:
    report = enrolment_separation(engine, photos_dir / "enrol")
    assert (report.people, report.photos, report.same_pairs, report.different_pairs) == (5, 12, 9, 57)
    assert report.threshold == load_registry().embedder("mobilefacenet").verify_threshold
    assert report.same_min > report.threshold > report.different_max
    assert report.separated


def test_one_person_across_group_photos(
    engine: FaceEngine, photos_dir: Path, enrolment: dict[Path, np.ndarray]
) -> None:
    obama = enrolment[photos_dir / "enrol" / "obama" / "obama.jpg"]
    biden = enrolment[photos_dir / "enrol" / "biden" / "biden.jpg"]
    faces = engine.analyze([load(photos_dir / "group" / "face_recognition_two_people.jpg")])[0]
    assert len(faces) == 2
    scores = np.array([[float(f.embedding @ obama), float(f.embedding @ biden)] for f in faces])
    assert sorted(scores.argmax(axis=1).tolist()) == [0, 1]  # one face is each of them
    assert scores.max(axis=1).min() > 0.4  # each matches its person clearly
    assert scores.min(axis=1).max() < 0.28  # and not the other one


def build_facenet_like(path: Path, *, layout: str, dim: int, seed: int = 0) -> np.ndarray:
    """A small ONNX with a FaceNet signature (160 x 160 RGB, NHWC or NCHW): 16 x 16 average pooling
    then a dense layer. Returns the dense weights so a test can compute the expected output."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((300, dim)).astype(np.float32)
    shape = ["N", 160, 160, 3] if layout == "NHWC" else ["N", 3, 160, 160]
    nodes = []
    source = "input"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
        source = "nchw"
    nodes += [
        helper.make_node("AveragePool", [source], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes,
        "facenet_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", dim])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return weights


@pytest.mark.parametrize(("layout", "dim"), [("NHWC", 512), ("NCHW", 128)])
def test_bring_your_own_facenet(settings: Settings, photos_dir: Path, tmp_path: Path, layout: str, dim: int) -> None:
    weights = build_facenet_like(tmp_path / "facenet.onnx", layout=layout, dim=dim)
    own = settings.updated(embedder="facenet", embedder_path=tmp_path / "facenet.onnx")
    embedder = load_embedder(own)
    assert (embedder.contract.layout, embedder.size, embedder.dim) == (layout, 160, dim)

    engine = FaceEngine(own, FaceEngine.from_settings(settings).detector, embedder)
    image = load(photos_dir / "group" / "face_recognition_two_people.jpg")
    faces = engine.analyze([image])[0]
    assert len(faces) == 2
    # The crops are FaceNet-style box crops, prewhitened, as the seed's original fed FaceNet.
    crops = crop_faces(image, [f.detection for f in faces], 160, "facenet")
    whitened = normalize_crops(crops, "prewhiten")
    assert np.allclose(whitened.reshape(2, -1).mean(axis=1), 0, atol=1e-4)
    assert np.allclose(whitened.reshape(2, -1).std(axis=1), 1, atol=1e-3)
    pooled = whitened.transpose(0, 3, 1, 2).reshape(2, 3, 10, 16, 10, 16).mean(axis=(3, 5)).reshape(2, 300)
    expected = pooled @ weights
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = np.stack([f.embedding for f in faces])
    assert got.shape == (2, dim)
    assert np.allclose(got, expected, atol=1e-4)


def test_a_missing_own_model_says_where_it_looked(settings: Settings, tmp_path: Path) -> None:
    own = settings.updated(embedder="facenet", embedder_path=tmp_path / "nope.onnx")
    with pytest.raises(ModelFileMissing, match=r"nope\.onnx"):
        load_embedder(own)
