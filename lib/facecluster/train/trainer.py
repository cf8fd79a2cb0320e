"""Triplet training of the projection head on frozen embeddings (torch; the Ray Train loop is in `trainjob`).

Persons are split into training and validation persons (never one person on both sides); batches
hold P persons × K faces; the loss is the triplet loss with batch-hard or semi-hard mining on cosine
distances. The head starts as the identity (its last layer is zero), so training can only move away
from the embedder's own vectors where the labelled faces show that it helps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from facecluster.engine.projection import Weights
from facecluster.store.versions import NotEnoughLabels

Mining = Literal["batch-hard", "semi-hard"]


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 20
    margin: float = 0.2
    min_faces: int = 5
    mining: Mining = "batch-hard"
    persons_per_batch: int = 16
    faces_per_person: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 256
    validation_share: float = 0.2
    patience: int = 5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HeadNet(nn.Module):
    """`y = unit(x + fc2(relu(fc1(unit(x)))))`: the identity until trained."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        return F.normalize(x + self.fc2(F.relu(self.fc1(x))), dim=1)

    def weights(self) -> Weights:
        def array(t: torch.Tensor) -> NDArray[np.float32]:
            return np.asarray(t.detach().cpu().numpy(), dtype=np.float32)

        return {
            "fc1": array(self.fc1.weight),
            "fc1_bias": array(self.fc1.bias),
            "fc2": array(self.fc2.weight),
            "fc2_bias": array(self.fc2.bias),
        }

    @classmethod
    def from_weights(cls, weights: Weights) -> HeadNet:
        hidden, dim = weights["fc1"].shape
        net = cls(dim, hidden)
        with torch.no_grad():
            net.fc1.weight.copy_(torch.from_numpy(weights["fc1"]))
            net.fc1.bias.copy_(torch.from_numpy(weights["fc1_bias"]))
            net.fc2.weight.copy_(torch.from_numpy(weights["fc2"]))
            net.fc2.bias.copy_(torch.from_numpy(weights["fc2_bias"]))
        return net


def split_persons(
    labels: list[str], *, min_faces: int, validation_share: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices of training and validation faces: persons with ≥ `min_faces` faces, split by person."""
    names, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True)
    eligible = sorted(str(n) for n, c in zip(names, counts, strict=True) if c >= min_faces)
    if len(eligible) < 4:
        raise NotEnoughLabels(
            f"training needs at least 4 labelled persons with {min_faces} or more faces each; found {len(eligible)}"
        )
    order = np.random.default_rng(seed).permutation(len(eligible))
    held = max(2, round(len(eligible) * validation_share))
    validation = {eligible[i] for i in order[:held]}
    training = {eligible[i] for i in order[held:]}
    index = np.arange(len(labels))
    return (
        index[[label in training for label in labels]],
        index[[label in validation for label in labels]],
    )


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float, mining: Mining) -> torch.Tensor:
    """Triplet loss on cosine distance over every anchor of the batch.

    batch-hard: the farthest positive against the nearest negative. semi-hard: the farthest
    positive against the nearest negative that is farther than it (the hardest one when none is)."""
    distance = 1.0 - embeddings @ embeddings.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=embeddings.device)
    positive_mask = same & ~eye
    has_positive = positive_mask.any(dim=1)
    hardest_positive = torch.where(positive_mask, distance, torch.full_like(distance, -1.0)).max(dim=1).values
    negatives = torch.where(same, torch.full_like(distance, 4.0), distance)
    if mining == "semi-hard":
        farther = torch.where(negatives > hardest_positive[:, None], negatives, torch.full_like(distance, 4.0))
        nearest = farther.min(dim=1).values
        negative = torch.where(nearest < 4.0, nearest, negatives.min(dim=1).values)
    else:
        negative = negatives.min(dim=1).values
    losses = F.relu(hardest_positive - negative + margin)[has_positive & (negatives < 4.0).any(dim=1)]
    return losses.mean() if len(losses) else embeddings.sum() * 0.0


def pk_batches(
    labels: NDArray[np.int64], persons: int, faces: int, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """One epoch of batches of `persons` persons × up to `faces` faces each; every person once an epoch."""
    by_person = [np.flatnonzero(labels == p) for p in np.unique(labels)]
    order = rng.permutation(len(by_person))
    batches = []
    for start in range(0, len(order), persons):
        picked = [
            rng.choice(by_person[i], size=min(faces, len(by_person[i])), replace=False)
            for i in order[start : start + persons]
        ]
        if len(picked) >= 2:
            batches.append(np.concatenate(picked))
    return batches


def train_epoch(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    vectors: torch.Tensor,
    labels: torch.Tensor,
    batches: list[NDArray[np.int64]],
    options: TrainOptions,
) -> float:
    """One pass over `batches` (rows of `vectors`); the mean loss."""
    net.train()
    total = 0.0
    for rows in batches:
        index = torch.from_numpy(rows).to(vectors.device)
        loss = triplet_loss(net(vectors[index]), labels[index], options.margin, options.mining)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        total += float(loss.detach())
    return total / max(1, len(batches))


def validation_loss(net: nn.Module, vectors: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    """Mean triplet loss over every (anchor, positive, negative) of the validation persons."""
    net.eval()
    with torch.no_grad():
        out = net(vectors)
        distance = 1.0 - out @ out.T
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=out.device)
        positive = (same & ~eye).float()
        negative = (~same).float()
        total, count = 0.0, 0.0
        for start in range(0, len(labels), 32):  # (a, p, n) in slices of anchors: memory O(32·n²)
            rows = slice(start, start + 32)
            terms = F.relu(distance[rows, :, None] - distance[rows, None, :] + margin)
            weight = positive[rows, :, None] * negative[rows, None, :]
            total += float((terms * weight).sum())
            count += float(weight.sum())
        return total / max(1.0, count)
