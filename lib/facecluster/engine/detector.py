"""Face detectors (YOLOv5-face, YOLOv8-face, YuNet) behind one batched interface.

Images are letterboxed onto a square canvas (a CPU step that a pipeline can run apart from the
model), run through the model many at a time, decoded with numpy and filtered by NMS. Boxes and
the 5 landmarks (left eye, right eye, nose, left and right mouth corner) come back in the
original image's coordinates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from facecluster.engine.registry import DetectorSpec

FloatArray = NDArray[np.float32]

#: Border, as a fraction of the longer side on each side, for the retry on images where no face
#: reached the detector's threshold: a face that fills the whole frame scores low or is missed by
#: the YOLO detectors (MODELS.md); with room around it, it scores as usual.
RETRY_BORDER = 0.2


@dataclass(frozen=True, slots=True)
class Letterbox:
    """An image fitted onto the model's square canvas: `original = (canvas - pad) / scale`."""

    canvas: NDArray[np.uint8]  # S x S x 3 RGB
    scale: float
    pad_x: float
    pad_y: float
    width: int  # of the original image
    height: int


@dataclass(frozen=True, slots=True)
class Detection:
    """One face: box (x1, y1, x2, y2), score and 5 landmarks, in original image pixels."""

    box: FloatArray  # (4,)
    score: float
    landmarks: FloatArray  # (5, 2)

    @property
    def xywh(self) -> list[float]:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return [x1, y1, x2 - x1, y2 - y1]

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def letterbox(image: NDArray[np.uint8], size: int, pad_value: int, border: float = 0.0) -> Letterbox:
    """Fit `image` into a `size` square, keeping the aspect ratio; `border` adds room on every side."""
    height, width = image.shape[:2]
    longest = max(height, width) * (1.0 + 2.0 * border)
    scale = size / longest
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
    pad_x = round((size - new_w) / 2) if border > 0 else 0
    pad_y = round((size - new_h) / 2) if border > 0 else 0
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return Letterbox(canvas, scale, float(pad_x), float(pad_y), width, height)


def tile_windows(width: int, height: int, tiles: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """`tiles` x `tiles` windows (x0, y0, x1, y1) covering the image, neighbours overlapping by `overlap` of
    a window, so a face cut by one window's edge is whole in the next."""

    def spans(length: int) -> list[tuple[int, int]]:
        size = length / (tiles - (tiles - 1) * overlap)
        step = size * (1.0 - overlap)
        return [(round(i * step), min(length, round(i * step + size))) for i in range(tiles)]

    return [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> NDArray[np.intp]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        w = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        inter = w * h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def _best_score(faces: list[Detection]) -> float:
    return max((face.score for face in faces), default=0.0)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _Candidates:
    """Decoded candidates of one image, in canvas coordinates."""

    boxes: FloatArray  # (K, 4) x1 y1 x2 y2
    scores: FloatArray  # (K,)
    landmarks: FloatArray  # (K, 5, 2)


class FaceDetector(ABC):
    """A detector model: `detect(images)` or, in a pipeline, `letterbox` then `detect_letterboxed`."""

    def __init__(self, spec: DetectorSpec, session: ort.InferenceSession) -> None:
        self.spec = spec
        self.session = session
        self.input_name: str = session.get_inputs()[0].name
        self.size = spec.input_size

    def letterbox(self, image: NDArray[np.uint8], border: float = 0.0) -> Letterbox:
        return letterbox(image, self.size, self.spec.pad_value, border)

    def detect(
        self,
        images: Sequence[NDArray[np.uint8]],
        *,
        batch_size: int = 8,
        score_floor: float | None = None,
        retry_padded: bool = True,
    ) -> list[list[Detection]]:
        """Faces of each RGB image, at least `score_floor` (default: the registry's floor)."""
        boxes = [self.letterbox(image) for image in images]
        found = self.detect_letterboxed(boxes, batch_size=batch_size, score_floor=score_floor)
        if retry_padded:
            found = self.retry_weak(found, images, batch_size=batch_size, score_floor=score_floor)
        return found

    def retry_weak(
        self,
        found: list[list[Detection]],
        images: Sequence[NDArray[np.uint8]],
        *,
        batch_size: int = 8,
        score_floor: float | None = None,
    ) -> list[list[Detection]]:
        """Images where no face reached the threshold run again with a border; the better pass wins."""
        found = list(found)
        weak = [i for i, faces in enumerate(found) if _best_score(faces) < self.spec.score_threshold]
        if weak:
            padded = [self.letterbox(images[i], RETRY_BORDER) for i in weak]
            retried = self.detect_letterboxed(padded, batch_size=batch_size, score_floor=score_floor)
            for i, faces in zip(weak, retried, strict=True):
                if _best_score(faces) > _best_score(found[i]):
                    found[i] = faces
        return found

    def add_tiles(
        self,
        found: list[list[Detection]],
        images: Sequence[NDArray[np.uint8]],
        *,
        tiles: int,
        batch_size: int = 8,
        score_floor: float | None = None,
    ) -> list[list[Detection]]:
        """With `tiles` >= 2, each image is also detected on `tiles` x `tiles` overlapping tiles (small faces
        of a large photo get more canvas pixels); tile and whole-canvas faces merge by NMS."""
        if tiles < 2:
            return found
        merged: list[list[Detection]] = []
        for image, whole in zip(images, found, strict=True):
            windows = tile_windows(image.shape[1], image.shape[0], tiles)
            boxes = [self.letterbox(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in windows]
            per_tile = self.detect_letterboxed(boxes, batch_size=batch_size, score_floor=score_floor)
            shifted = [
                Detection(face.box + offset[[0, 1, 0, 1]], face.score, face.landmarks + offset)
                for (x0, y0, _, _), faces in zip(windows, per_tile, strict=True)
                for offset in [np.array([x0, y0], np.float32)]
                for face in faces
            ]
            every = whole + shifted
            if not every:
                merged.append([])
                continue
            scores = np.array([f.score for f in every], np.float32)
            keep = nms(np.stack([f.box for f in every]), scores, self.spec.nms_iou)
            merged.append([every[i] for i in keep])
        return merged

    def detect_letterboxed(
        self, boxes: Sequence[Letterbox], *, batch_size: int = 8, score_floor: float | None = None
    ) -> list[list[Detection]]:
        """Run the model over letterboxed images, `batch_size` at a time."""
        floor = self.spec.score_floor if score_floor is None else score_floor
        results: list[list[Detection]] = []
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start : start + batch_size]
            canvases = np.stack([box.canvas for box in chunk])
            outputs = self.session.run(None, {self.input_name: self.preprocess(canvases)})
            named = {meta.name: out for meta, out in zip(self.session.get_outputs(), outputs, strict=True)}
            for index, box in enumerate(chunk):
                candidates = self.decode(named, index, floor)
                results.append(self._finish(candidates, box))
        return results

    def _finish(self, candidates: _Candidates, box: Letterbox) -> list[Detection]:
        if not len(candidates.scores):
            return []
        keep = nms(candidates.boxes, candidates.scores, self.spec.nms_iou)
        pad = np.array([box.pad_x, box.pad_y], dtype=np.float32)
        limits = np.array([box.width, box.height, box.width, box.height], dtype=np.float32)
        faces: list[Detection] = []
        for k in keep:
            xyxy = (candidates.boxes[k].reshape(2, 2) - pad) / box.scale
            xyxy = np.clip(xyxy.reshape(4), 0.0, limits)
            if xyxy[2] - xyxy[0] < 1.0 or xyxy[3] - xyxy[1] < 1.0:
                continue
            landmarks = (candidates.landmarks[k] - pad) / box.scale
            faces.append(Detection(xyxy.astype(np.float32), float(candidates.scores[k]), landmarks.astype(np.float32)))
        return faces

    @abstractmethod
    def preprocess(self, canvases: NDArray[np.uint8]) -> FloatArray:
        """N x S x S x 3 RGB canvases to the model's input tensor."""

    @abstractmethod
    def decode(self, outputs: dict[str, FloatArray], index: int, floor: float) -> _Candidates:
        """Candidates of image `index` of the batch scoring at least `floor`."""


def _rgb_unit_nchw(canvases: NDArray[np.uint8]) -> FloatArray:
    return np.ascontiguousarray(canvases.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


class YoloV5Face(FaceDetector):
    """YOLOv5-face: anchor-based, raw logits at strides 8, 16 and 32."""

    ANCHORS: ClassVar[dict[int, tuple[tuple[int, int], ...]]] = {
        8: ((4, 5), (8, 10), (13, 16)),
        16: ((23, 29), (43, 55), (73, 105)),
        32: ((146, 217), (231, 300), (335, 433)),
    }

    def preprocess(self, canvases: NDArray[np.uint8]) -> FloatArray:
        return _rgb_unit_nchw(canvases)

    @cached_property
    def _priors(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per candidate, in output order: grid cell (x, y), anchor (w, h) and stride."""
        grids, anchors, strides = [], [], []
        for stride, sizes in self.ANCHORS.items():
            cells = self.size // stride
            gy, gx = np.mgrid[0:cells, 0:cells]
            grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
            for anchor in sizes:
                grids.append(grid)
                anchors.append(np.tile(np.asarray(anchor, np.float32), (len(grid), 1)))
                strides.append(np.full(len(grid), stride, np.float32))
        return np.concatenate(grids), np.concatenate(anchors), np.concatenate(strides)

    def decode(self, outputs: dict[str, FloatArray], index: int, floor: float) -> _Candidates:
        raw = np.concatenate([outputs[f"stride_{s}"][index].reshape(-1, 16) for s in self.ANCHORS])
        scores = _sigmoid(raw[:, 4]) * _sigmoid(raw[:, 15])
        keep = np.flatnonzero(scores >= floor)
        grid, anchor, stride = (p[keep] for p in self._priors)
        raw, scores, stride = raw[keep], scores[keep], stride[:, None]
        xy = (_sigmoid(raw[:, 0:2]) * 2.0 - 0.5 + grid) * stride
        wh = (_sigmoid(raw[:, 2:4]) * 2.0) ** 2 * anchor
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        landmarks = raw[:, 5:15].reshape(-1, 5, 2) * anchor[:, None, :] + (grid * stride)[:, None, :]
        return _Candidates(boxes.astype(np.float32), scores, landmarks.astype(np.float32))


class YoloV8Face(FaceDetector):
    """YOLOv8-face: anchor-free, distribution focal loss boxes, at strides 8, 16 and 32."""

    BINS = 16

    def preprocess(self, canvases: NDArray[np.uint8]) -> FloatArray:
        return _rgb_unit_nchw(canvases)

    @cached_property
    def _priors(self) -> tuple[FloatArray, FloatArray]:
        points, strides = [], []
        for stride in (8, 16, 32):
            cells = self.size // stride
            gy, gx = np.mgrid[0:cells, 0:cells]
            points.append(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32) + 0.5)
            strides.append(np.full(cells * cells, stride, np.float32))
        return np.concatenate(points), np.concatenate(strides)

    def decode(self, outputs: dict[str, FloatArray], index: int, floor: float) -> _Candidates:
        by_cells = {out.shape[-1]: out[index] for out in outputs.values()}
        raw = np.concatenate(
            [by_cells[self.size // s].reshape(by_cells[self.size // s].shape[0], -1).T for s in (8, 16, 32)]
        )
        scores = _sigmoid(raw[:, 4 * self.BINS])
        keep = np.flatnonzero(scores >= floor)
        point, stride = (p[keep] for p in self._priors)
        raw, scores, stride = raw[keep], scores[keep], stride[:, None]
        logits = raw[:, : 4 * self.BINS].reshape(-1, 4, self.BINS)
        logits = logits - logits.max(axis=2, keepdims=True)
        weights = np.exp(logits)
        distances = (weights / weights.sum(axis=2, keepdims=True)) @ np.arange(self.BINS, dtype=np.float32)
        boxes = np.concatenate([point - distances[:, :2], point + distances[:, 2:]], axis=1) * stride
        kps = raw[:, 4 * self.BINS + 1 :].reshape(-1, 5, 3)[:, :, :2]
        landmarks = (kps * 2.0 + point[:, None, :] - 0.5) * stride[:, None, :]
        return _Candidates(boxes.astype(np.float32), scores, landmarks.astype(np.float32))


class YuNet(FaceDetector):
    """YuNet: anchor-free, one prior per cell, BGR 0..255 input."""

    def preprocess(self, canvases: NDArray[np.uint8]) -> FloatArray:
        return np.ascontiguousarray(canvases[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)

    @cached_property
    def _priors(self) -> dict[int, FloatArray]:
        priors = {}
        for stride in (8, 16, 32):
            cells = self.size // stride
            gy, gx = np.mgrid[0:cells, 0:cells]
            priors[stride] = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
        return priors

    def decode(self, outputs: dict[str, FloatArray], index: int, floor: float) -> _Candidates:
        all_boxes, all_scores, all_landmarks = [], [], []
        for stride, grid in self._priors.items():
            cls = outputs[f"cls_{stride}"][index, :, 0]
            obj = outputs[f"obj_{stride}"][index, :, 0]
            scores = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.flatnonzero(scores >= floor)
            bbox = outputs[f"bbox_{stride}"][index, keep]
            kps = outputs[f"kps_{stride}"][index, keep].reshape(-1, 5, 2)
            cell = grid[keep]
            centre = (cell + bbox[:, :2]) * stride
            wh = np.exp(bbox[:, 2:4]) * stride
            all_boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1))
            all_scores.append(scores[keep])
            all_landmarks.append((cell[:, None, :] + kps) * stride)
        return _Candidates(
            np.concatenate(all_boxes).astype(np.float32),
            np.concatenate(all_scores).astype(np.float32),
            np.concatenate(all_landmarks).astype(np.float32),
        )


_FAMILIES: dict[str, type[FaceDetector]] = {
    "yolov5-face": YoloV5Face,
    "yolov8-face": YoloV8Face,
    "yunet": YuNet,
}


def detector_family(session: ort.InferenceSession) -> str:
    """Which detector family an ONNX file's outputs belong to, or a `ModelContractError` saying why none."""
    from facecluster.engine.embedder import ModelContractError

    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
        raise ModelContractError(f"a face detector takes one N,3,H,W input; this one takes {_shapes(inputs)}")
    outputs = {out.name: list(out.shape) for out in session.get_outputs()}
    if {f"stride_{s}" for s in YoloV5Face.ANCHORS} <= set(outputs) and all(
        len(shape) == 5 and shape[-1] == 16 for shape in outputs.values()
    ):
        return "yolov5-face"
    if len(outputs) == 3 and all(len(shape) == 4 and shape[1] == 80 for shape in outputs.values()):
        return "yolov8-face"
    if {f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)} <= set(outputs):
        return "yunet"
    raise ModelContractError(
        "not a face detector this service decodes: YOLOv5-face (outputs stride_8/16/32 [N,3,H,W,16]), "
        f"YOLOv8-face (three [N,80,H,W] maps) or YuNet (cls/obj/bbox/kps_8/16/32); this one has {outputs}"
    )


def _shapes(args: Sequence[ort.NodeArg]) -> dict[str, list[int | str]]:
    return {arg.name: list(arg.shape) for arg in args}


def own_detector_spec(spec: DetectorSpec, session: ort.InferenceSession, known: Sequence[DetectorSpec]) -> DetectorSpec:
    """The spec of a user's own detector file: its family from the output signature (the configured
    detector's calibration when the family is the same, else that of the registry's detector of the family),
    its canvas from a static square input, else the family's."""
    from facecluster.engine.embedder import ModelContractError

    family = detector_family(session)
    base = spec if spec.family == family else next(s for s in known if s.family == family)
    height, width = session.get_inputs()[0].shape[2:4]
    size = base.input_size
    if isinstance(height, int) and height > 0:
        if height != width:
            raise ModelContractError(f"the detector's input must be square; it is {height}x{width}")
        size = height
    if size % 32:
        raise ModelContractError(f"the detector's input size must be a multiple of 32; it is {size}")
    return base.model_copy(update={"input_size": size})


def build_detector(spec: DetectorSpec, session: ort.InferenceSession) -> FaceDetector:
    return _FAMILIES[spec.family](spec, session)
