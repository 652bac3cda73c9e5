"""How well a model separates its labels: ROC AUC, thresholds, and an evaluation on fresh phantoms.

`roc_auc` is the Mann-Whitney statistic computed from ranks (tied scores share their average rank, so a
tie between a positive and a negative counts one half): no scikit-learn needed.

>>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
>>> roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from qure_ray.models.card import ModelCard
from qure_ray.models.datasets import PhantomSet, phantom_set
from qure_ray.models.inference import predict_batch

SCORING_BATCH = 64


def _binary(targets: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    truth, values = np.asarray(targets) > 0.5, np.asarray(scores, dtype=np.float64)
    if truth.shape != values.shape or truth.ndim != 1:
        raise ValueError(f"targets and scores must be 1-D of one length, got {truth.shape} and {values.shape}")
    if truth.all() or not truth.any():
        raise ValueError(f"ROC AUC needs positives and negatives; got {int(truth.sum())} of {truth.size} positive")
    return truth, values


def _ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks, ties given the average of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank where each distinct value starts
    return (first + (counts + 1) / 2)[inverse]


def roc_auc(targets: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative."""
    truth, values = _binary(targets, scores)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    rank_sum = float(_ranks(values)[truth].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def youden_threshold(targets: ArrayLike, scores: ArrayLike, *, low: float = 0.01, high: float = 0.99) -> float:
    """The threshold maximising sensitivity + specificity - 1, midway between the two scores it separates
    (the widest margin on both sides), kept within [low, high] so a card can hold it."""
    truth, values = _binary(targets, scores)
    distinct = np.unique(values)
    cuts = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1e-6]])
    called = values[None, :] >= cuts[:, None]
    youden = called[:, truth].mean(axis=1) - called[:, ~truth].mean(axis=1)
    return float(np.clip(cuts[int(np.argmax(youden))], low, high))


def score(network: nn.Module, card: ModelCard, images: NDArray[np.float32]) -> NDArray[np.float64]:
    """Scores (N, labels) from the serving path (`predict_batch`) on CPU, in batches."""
    device = torch.device("cpu")
    rows: list[list[float]] = []
    for start in range(0, len(images), SCORING_BATCH):
        batch = list(images[start : start + SCORING_BATCH])
        predictions = predict_batch(network, card, batch, device)
        rows.extend([p.scores[label] for label in card.label_names] for p in predictions)
    return np.asarray(rows, dtype=np.float64)


def label_aucs(labels: Sequence[str], targets: NDArray[np.float32], scores: NDArray[np.float64]) -> dict[str, float]:
    return {label: roc_auc(targets[:, i], scores[:, i]) for i, label in enumerate(labels)}


@dataclass(frozen=True)
class Evaluation:
    """Per-label ROC AUC of one model on `images` fresh phantoms made from `seed`."""

    model: str
    images: int
    seed: int
    auc: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "images": self.images, "seed": self.seed, "auc": self.auc}

    def table(self) -> str:
        width = max(len(label) for label in self.auc)
        lines = [f"{self.model}: {self.images} fresh phantoms, seed {self.seed}", f"{'label':<{width}}  ROC AUC"]
        lines += [f"{label:<{width}}  {value:.4f}" for label, value in self.auc.items()]
        return "\n".join(lines)


def evaluate(network: nn.Module, card: ModelCard, *, images: int, seed: int) -> Evaluation:
    """Score `images` phantoms made from `seed` (use one other than the training seed) and rank them."""
    data: PhantomSet = phantom_set(card, images=images, seed=seed)
    scores = score(network, card, data.images)
    return Evaluation(card.name, images, seed, label_aucs(data.labels, data.targets, scores))
