"""Labelled phantom sets for a model card, made the way partners' images reach a model.

Each phantom is written as DICOM Part 10 bytes (`phantoms.to_dicom`) and read back by the serving
preprocessing (`prepare_for_model` with the card's input size and window mode), so a model trains and is
judged on exactly what it sees in production. A set is a pure function of the card's recipe and a seed.

"Performance": about 40 ms per 256 px chest image and 15 ms per head CT slice on one core; the pixels of
a set take `images x size^2 x 4` bytes (3,000 images at 128 px: about 200 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qure_ray.dicom.pixels import prepare_for_model
from qure_ray.errors import ConfigError
from qure_ray.models.card import ModelCard, Training
from qure_ray.models.phantoms import (
    HEAD_SERIES_POSITIONS,
    Phantom,
    PhantomKind,
    chest_phantom,
    head_ct_phantom,
    to_dicom,
)


@dataclass(frozen=True)
class PhantomSet:
    """Model inputs (N, size, size) float32 in [0, 1] and their 0/1 targets (N, labels)."""

    images: NDArray[np.float32]
    targets: NDArray[np.float32]
    labels: tuple[str, ...]

    def split(self, count: int) -> tuple[PhantomSet, PhantomSet]:
        """The first `count` images and the rest."""
        return (
            PhantomSet(self.images[:count], self.targets[:count], self.labels),
            PhantomSet(self.images[count:], self.targets[count:], self.labels),
        )


def recipe(card: ModelCard) -> Training:
    """The card's `training:` section; training and evaluation both need it."""
    if card.training is None:
        raise ConfigError(
            f"{card.folder / 'model.yaml'}: model {card.name!r} has no training section, so there is no recipe "
            "for its phantoms; add `training:` (see models/*/model.yaml)"
        )
    return card.training


def phantom_set(card: ModelCard, *, images: int, seed: int) -> PhantomSet:
    """`images` phantoms for the card's labels, each label shown on exactly round(prevalence x images)."""
    training = recipe(card)
    rng = np.random.default_rng(seed)
    labels = tuple(card.label_names)
    positives = round(training.prevalence * images)
    if not 0 < positives < images:
        raise ConfigError(
            f"{images} image(s) at prevalence {training.prevalence} give {positives} positive(s) per label; "
            "a set needs positives and negatives of every label: use more images"
        )
    targets = np.stack([rng.permutation(images) < positives for _ in labels], axis=1).astype(np.float32)
    phantom_seeds = rng.integers(0, 2**31, images)
    positions = rng.uniform(*(training.slice_positions or HEAD_SERIES_POSITIONS), images)  # drawn for any kind
    pixels = np.empty((images, card.input.size, card.input.size), np.float32)
    for index in range(images):
        findings = frozenset(label for label, shown in zip(labels, targets[index], strict=True) if shown)
        phantom = _phantom(training, findings, seed=int(phantom_seeds[index]), position=float(positions[index]))
        pixels[index] = prepare_for_model(
            to_dicom(phantom), size=card.input.size, windowing=card.preprocessing.windowing
        )
    return PhantomSet(pixels, targets, labels)


def _phantom(training: Training, findings: frozenset[str], *, seed: int, position: float) -> Phantom:
    if training.phantom is PhantomKind.CHEST:
        return chest_phantom(seed=seed, findings=findings, size=training.phantom_size)
    return head_ct_phantom(seed=seed, findings=findings, size=training.phantom_size, slice_position=position)
