"""Training a card's network on phantoms: `qure-ray models train NAME` follows the card's `training:`.

The recipe lives in the card, so training needs no flags and is reproducible: the phantoms come from the
training seed (the first `images` to learn from, the next `validation_images` to choose thresholds on),
every random choice in torch is seeded, `torch.use_deterministic_algorithms(True)` and a fixed thread
count hold for the run (and are restored after it). The same card on the same torch build gives the same
weights file, byte for byte.

What training writes: the weights (float16 state_dict) next to the card, and the card itself with
`trained: true`, `trained_on`, the new `weights.sha256`, each label's threshold (the Youden point on the
validation split) and `validation_auc`.

"Performance": the shipped cards each train in under ten minutes on two CPU cores; see their `training:`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from qure_ray.models.card import ModelCard, Training, Weights, load_card, write_card
from qure_ray.models.datasets import PhantomSet, phantom_set, recipe
from qure_ray.models.evaluation import label_aucs, score, youden_threshold
from qure_ray.models.network import build_network, load_weights, weights_bytes
from qure_ray.models.timing import cpu_threads

logger = logging.getLogger(__name__)

TRAINED_ON = "synthetic phantoms — demonstration only"


@dataclass(frozen=True)
class TrainingOutcome:
    card: ModelCard
    validation_auc: dict[str, float]
    seconds: float


@contextmanager
def deterministic(*, seed: int, threads: int) -> Iterator[None]:
    """Seeded torch with deterministic kernels on `threads` threads; the previous settings come back after."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        with cpu_threads(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(previous)


def train(card_path: Path) -> TrainingOutcome:
    """Train the card at `card_path` from its recipe; write the weights and the updated card."""
    started = time.monotonic()
    card = load_card(card_path)
    training = recipe(card)
    logger.info("%s: making %d + %d phantoms", card.name, training.images, training.validation_images)
    data = phantom_set(card, images=training.images + training.validation_images, seed=training.seed)
    learn, validation = data.split(training.images)
    with deterministic(seed=training.seed, threads=training.threads):
        network = build_network(card)
        _fit(network, learn, training, name=card.name, channels=card.input.channels)
        data_bytes = weights_bytes(network)
        network = load_weights(network, data_bytes).eval()  # judge the float16 weights that ship
        scores = score(network, card, validation.images)
    aucs = label_aucs(card.label_names, validation.targets, scores)
    labels = tuple(
        label.model_copy(update={"threshold": round(youden_threshold(validation.targets[:, i], scores[:, i]), 4)})
        for i, label in enumerate(card.labels)
    )
    card.weights_path.write_bytes(data_bytes)
    trained = card.model_copy(
        update={
            "trained": True,
            "trained_on": TRAINED_ON,
            "labels": labels,
            "weights": Weights(file=card.weights.file, sha256=hashlib.sha256(data_bytes).hexdigest()),
            "validation_auc": {label: round(value, 4) for label, value in aucs.items()},
        }
    )
    write_card(trained, card_path)
    load_card(card_path).verified_weights()  # what was written reads back as a valid card
    seconds = time.monotonic() - started
    logger.info("%s: trained in %.0f s; validation ROC AUC %s", card.name, seconds, trained.validation_auc)
    return TrainingOutcome(trained, aucs, seconds)


def _fit(network: torch.nn.Module, data: PhantomSet, training: Training, *, name: str, channels: int) -> None:
    """Multi-label BCE, AdamW on a one-cycle schedule, shuffled by a seeded generator."""
    images = torch.from_numpy(data.images).unsqueeze(1)
    if channels == 3:  # as `predict_batch` feeds it: the grey image in every channel
        images = images.expand(-1, 3, -1, -1)
    targets = torch.from_numpy(data.targets)
    steps_per_epoch = math.ceil(len(images) / training.batch_size)
    optimiser = torch.optim.AdamW(network.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=training.learning_rate, total_steps=training.epochs * steps_per_epoch
    )
    shuffle = torch.Generator().manual_seed(training.seed)
    network.train()
    for epoch in range(training.epochs):
        order = torch.randperm(len(images), generator=shuffle)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * training.batch_size : (step + 1) * training.batch_size]
            loss = F.binary_cross_entropy_with_logits(network(images[batch]), targets[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.detach().item() * len(batch)
        logger.info("%s: epoch %d/%d, loss %.4f", name, epoch + 1, training.epochs, total / len(images))
