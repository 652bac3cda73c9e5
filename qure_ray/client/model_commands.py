"""`qure-ray models train | eval`: train a model card on phantoms, or measure it on fresh ones.

`add_commands(subparsers)` registers `models` on the `qure-ray` parser and `run(args)` runs it; errors are
`QureError`s (an unknown card name is a `ConfigError` listing the cards there), which `qure-ray` turns
into a message and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qure_ray.errors import ConfigError

DEFAULT_EVAL_IMAGES = 256
DEFAULT_EVAL_SEED = 2026
"""Any seed but the card's training seed gives phantoms the model has never seen."""


def add_commands(subparsers: Any) -> None:
    """Register `models train NAME` and `models eval NAME` on an `add_subparsers()` object."""
    models = subparsers.add_parser("models", help="train and evaluate the model cards on synthetic phantoms")
    actions = models.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a card's model as its `training:` section says")
    evaluate = actions.add_parser("eval", help="per-label ROC AUC of a model on fresh phantoms")
    for action in (train, evaluate):
        action.add_argument("name", help="the card's name, e.g. qxr-densenet")
        action.add_argument("--models-dir", type=Path, default=None, help="folder of model cards (default: shipped)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument("--images", type=int, default=DEFAULT_EVAL_IMAGES, help="phantoms to make")
    evaluate.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="any seed but the training seed")


def run(args: argparse.Namespace) -> None:
    """Run `models train` or `models eval`; prints what it did on stdout."""
    import torch

    from qure_ray.models.card import load_card
    from qure_ray.models.datasets import recipe
    from qure_ray.models.evaluation import evaluate
    from qure_ray.models.network import load_network
    from qure_ray.models.registry import card_path
    from qure_ray.models.training import train
    from qure_ray.paths import SHIPPED_MODELS_DIR

    path = card_path(args.models_dir or SHIPPED_MODELS_DIR, args.name)
    if args.action == "train":
        outcome = train(path)
        print(f"{path}: trained in {outcome.seconds:.0f} s, sha256 {outcome.card.weights.sha256}")
        return
    card = load_card(path)
    if args.seed == recipe(card).seed:
        raise ConfigError(
            f"--seed {args.seed} is {card.name}'s training seed; evaluation needs fresh phantoms: pass another --seed"
        )
    evaluation = evaluate(load_network(card, torch.device("cpu")), card, images=args.images, seed=args.seed)
    print(json.dumps(evaluation.to_json(), indent=2) if args.json else evaluation.table())
