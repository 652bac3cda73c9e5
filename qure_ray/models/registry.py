"""The model registry: every card under the models folder, validated, one model per use case."""

from __future__ import annotations

from pathlib import Path

from qure_ray.errors import ConfigError
from qure_ray.models.card import CARD_FILE, ModelCard, load_card
from qure_ray.records import UseCase


def load_registry(models_dir: Path, *, verify_weights: bool = True) -> dict[UseCase, ModelCard]:
    """All cards of `models_dir/*/model.yaml`, keyed by use case.

    `verify_weights` hashes each weights file against its card: the app builder does it once at deploy and
    each model replica when it loads; parts that only read cards (the job manager) skip it.
    """
    if not models_dir.is_dir():
        raise ConfigError(f"QURE_MODELS_DIR: {str(models_dir)!r} is not a folder of model cards")
    cards: dict[UseCase, ModelCard] = {}
    for path in sorted(models_dir.glob(f"*/{CARD_FILE}")):
        card = load_card(path)
        if verify_weights:
            card.verified_weights()
        if card.usecase in cards:
            raise ConfigError(
                f"{path}: use case {card.usecase.value!r} is already served by {cards[card.usecase].name!r}; "
                "one model per use case"
            )
        cards[card.usecase] = card
    if not cards:
        raise ConfigError(f"QURE_MODELS_DIR: no {CARD_FILE} found under {str(models_dir)!r}")
    return cards


def card_path(models_dir: Path, name: str) -> Path:
    """The `model.yaml` of the card named `name` under `models_dir` (its weights are not checked)."""
    paths = {load_card(path).name: path for path in sorted(models_dir.glob(f"*/{CARD_FILE}"))}
    if name not in paths:
        known = ", ".join(sorted(paths)) or "none"
        raise ConfigError(f"no model card named {name!r} under {str(models_dir)!r}; the cards there: {known}")
    return paths[name]
