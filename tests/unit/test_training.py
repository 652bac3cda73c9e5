"""Training, evaluation and the shipped models' quality, on phantoms made here (no files, no network)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from qure_ray.client.cli import main
from qure_ray.errors import ConfigError
from qure_ray.models import load_card, load_registry
from qure_ray.models.evaluation import evaluate, roc_auc, youden_threshold
from qure_ray.models.inference import predict_batch
from qure_ray.models.network import load_network
from qure_ray.models.training import TRAINED_ON, train
from qure_ray.paths import SHIPPED_MODELS_DIR
from qure_ray.records import UseCase

CHEST = SHIPPED_MODELS_DIR / "qxr-densenet" / "model.yaml"
HEAD = SHIPPED_MODELS_DIR / "qer-densenet" / "model.yaml"


def card_copy(tmp_path: Path, source: Path = CHEST, **changes: dict[str, object]) -> Path:
    """A copy of a shipped card (and its weights) whose sections are updated with `changes`."""
    folder = tmp_path / "models" / source.parent.name
    shutil.copytree(source.parent, folder)
    raw = yaml.safe_load(source.read_text())
    for section, values in changes.items():
        raw[section] = {**raw[section], **values} if isinstance(raw.get(section), dict) else values
    (folder / "model.yaml").write_text(yaml.safe_dump(raw))
    return folder / "model.yaml"


# --- ROC AUC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),  # perfectly wrong
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # one pair of four misordered
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: a tie counts one half
        ([0, 0, 1, 1, 1], [0.2, 0.6, 0.6, 0.6, 0.9], (3 + 2 * 0.5 + 1) / 6),  # ties across the classes
    ],
)
def test_roc_auc_counts_ordered_pairs_and_half_ties(targets: list[int], scores: list[float], expected: float) -> None:
    assert roc_auc(targets, scores) == pytest.approx(expected)


def test_roc_auc_needs_both_classes_and_a_threshold_separates_them() -> None:
    with pytest.raises(ValueError, match="positives and negatives"):
        roc_auc([1, 1], [0.2, 0.3])
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9]) == pytest.approx(0.5)  # midway in the gap
    assert 0.01 <= youden_threshold([0, 1], [0.0001, 0.0002]) <= 0.99


# --- cards -------------------------------------------------------------------------------------------


def test_a_densenet_card_with_a_bad_kwarg_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = card_copy(tmp_path, architecture={"kwargs": {"growth_rate": 12, "depth": 3}})
    with pytest.raises(ConfigError) as info:
        load_card(path)
    assert str(path) in str(info.value) and "'architecture'" in str(info.value) and "depth" in str(info.value)


def test_a_bad_training_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = card_copy(tmp_path, training={"epochs": 0})
    with pytest.raises(ConfigError) as info:
        load_card(path)
    assert str(path) in str(info.value) and "training.epochs" in str(info.value)
    path = card_copy(tmp_path / "b", training={"phantm": "chest"})
    with pytest.raises(ConfigError, match=r"training\.phantm.*Extra inputs are not permitted"):
        load_card(path)


def test_labels_without_a_phantom_signature_cannot_be_trained(tmp_path: Path) -> None:
    path = card_copy(tmp_path, labels=[{"name": "nodule", "threshold": 0.5}, {"name": "fibrosis", "threshold": 0.5}])
    with pytest.raises(ConfigError, match=r"field 'training': .*\['fibrosis'\] have no signature in chest"):
        load_card(path)


# --- training ----------------------------------------------------------------------------------------

TINY = {"images": 8, "validation_images": 8, "prevalence": 0.5, "epochs": 2, "batch_size": 4, "phantom_size": 64}


def test_training_is_deterministic_and_rewrites_the_card(tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        path = card_copy(tmp_path / run, HEAD, training=TINY, input={"size": 32})
        before = load_card(path)
        outcome = train(path)
        card = load_card(path)
        data = card.verified_weights()
        assert card.weights.sha256 == hashlib.sha256(data).hexdigest() != before.weights.sha256
        assert card == outcome.card and card.trained and card.trained_on == TRAINED_ON
        assert card.training == before.training and set(card.validation_auc or {}) == set(card.label_names)
        digests.append(card.weights.sha256)
    assert digests[0] == digests[1]
    assert torch.are_deterministic_algorithms_enabled() is False  # settings restored after training


def test_a_three_channel_card_trains_and_serves(tmp_path: Path) -> None:
    """Serving gives such a network the grey image in each of its 3 channels; training must feed it the same."""
    path = card_copy(tmp_path, HEAD, training=TINY, input={"size": 32, "channels": 3})
    card = train(path).card
    assert card.input.channels == 3 and card.trained
    network = load_network(card, torch.device("cpu"))
    [prediction] = predict_batch(network, card, [np.zeros((32, 32), np.float32)], torch.device("cpu"))
    assert set(prediction.scores) == set(card.label_names)


# --- the shipped models --------------------------------------------------------------------------------


@pytest.mark.parametrize(("usecase", "images"), [(UseCase.QXR, 64), (UseCase.QER, 64)])
def test_shipped_models_separate_every_label_on_fresh_phantoms(usecase: UseCase, images: int) -> None:
    card = load_registry(SHIPPED_MODELS_DIR)[usecase]
    assert card.trained and card.training is not None and card.weights_path.stat().st_size < 20 * 1024 * 1024
    seed = card.training.seed + 4242  # not the training seed: phantoms the model has never seen
    evaluation = evaluate(load_network(card, torch.device("cpu")), card, images=images, seed=seed)
    assert set(evaluation.auc) == set(card.label_names)
    assert all(auc >= 0.9 for auc in evaluation.auc.values()), evaluation.table()


def test_models_eval_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "eval", "qer-densenet", "--json", "--images", "16", "--seed", "7"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report.keys() == {"model", "images", "seed", "auc"}
    assert (report["model"], report["images"], report["seed"]) == ("qer-densenet", 16, 7)
    assert set(report["auc"]) == {"intracranial_haemorrhage", "midline_shift"}
    assert all(0.0 <= value <= 1.0 for value in report["auc"].values())


def test_models_commands_refuse_an_unknown_model_and_the_training_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "eval", "qxr-nonexistent"]) == 2
    error = capsys.readouterr().err
    assert "no model card named 'qxr-nonexistent'" in error and "qer-densenet, qxr-densenet" in error
    assert main(["models", "train", "qxr-nonexistent"]) == 2
    assert main(["models", "eval", "qer-densenet", "--seed", "0"]) == 2
    assert "training seed" in capsys.readouterr().err
