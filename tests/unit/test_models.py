from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import yaml
from torch import nn

from qure_ray.config import Settings
from qure_ray.dicom.pixels import prepare_for_model
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import ConfigError, ModelError
from qure_ray.models import load_card, load_registry, verdict
from qure_ray.models.card import ModelCard, Weights
from qure_ray.models.inference import predict_batch, select_device
from qure_ray.models.network import build_network, load_network, weights_bytes
from qure_ray.paths import SHIPPED_MODELS_DIR
from qure_ray.records import TriageStatus, UseCase

CARD = SHIPPED_MODELS_DIR / "qxr-densenet" / "model.yaml"


def copy_card(tmp_path: Path, **changes: object) -> Path:
    folder = tmp_path / "models" / "m"
    shutil.copytree(CARD.parent, folder)
    raw = yaml.safe_load(CARD.read_text())
    raw.update(changes)
    (folder / "model.yaml").write_text(yaml.safe_dump(raw))
    return folder / "model.yaml"


def test_shipped_cards_are_valid_and_trained_on_phantoms() -> None:
    registry = load_registry(SHIPPED_MODELS_DIR)
    chest, head = registry[UseCase.QXR], registry[UseCase.QER]
    assert chest.label_names == ["nodule", "consolidation", "pleural_effusion", "cardiomegaly", "pneumothorax"]
    assert head.label_names == ["intracranial_haemorrhage", "midline_shift"]
    assert chest.preprocessing.window == "dataset"  # a radiograph's window is chosen per image
    assert (head.preprocessing.window, head.preprocessing.center, head.preprocessing.width) == ("fixed", 40, 80)
    for card in (chest, head):
        assert card.trained is True and card.info.trained_on == "synthetic phantoms — demonstration only"
        assert card.architecture.builder == "densenet" and card.weights_path.stat().st_size < 20 * 1024 * 1024
        assert all(auc >= 0.9 for auc in (card.validation_auc or {}).values()) and card.validation_auc


@pytest.mark.parametrize("builder", ["densenet121", "resnet18", "resnet50"])
def test_torchvision_builders_still_load_their_weights(builder: str, tmp_path: Path) -> None:
    raw = yaml.safe_load(CARD.read_text())
    raw["architecture"] = {"builder": builder, "kwargs": {}}
    card = ModelCard(**raw, folder=tmp_path)
    network = build_network(card)
    data = weights_bytes(network)
    (tmp_path / card.weights.file).write_bytes(data)
    card = card.model_copy(update={"weights": Weights(file=card.weights.file, sha256=hashlib.sha256(data).hexdigest())})
    loaded = load_network(card, torch.device("cpu"))
    assert type(loaded) is type(network) and loaded.state_dict().keys() == network.state_dict().keys()


def test_bad_card_names_the_file_and_field(tmp_path: Path) -> None:
    path = copy_card(tmp_path, labels=[{"name": "nodule", "threshold": 1.5}])
    with pytest.raises(ConfigError) as info:
        load_card(path)
    assert str(path) in str(info.value) and "labels.0.threshold" in str(info.value)


def test_a_card_serves_a_use_case_routing_can_pick(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a card serves one of"):
        load_card(copy_card(tmp_path, usecase="unsupported"))


def test_weights_with_a_wrong_sha256_are_refused(tmp_path: Path) -> None:
    path = copy_card(tmp_path, weights={"file": "weights.pt", "sha256": "0" * 64})
    with pytest.raises(ConfigError, match="hashes to"):
        load_registry(path.parent.parent)


def test_gpu_asked_without_cuda_fails_clearly() -> None:
    with pytest.raises(ModelError, match="num_gpus=1"):
        select_device(num_gpus=1, cuda_available=False)
    assert select_device(num_gpus=0, cuda_available=False) == torch.device("cpu")


def _network_and_images(count: int) -> tuple[ModelCard, nn.Module, list[np.ndarray]]:
    """The shipped chest X-ray network on the CPU, and `count` preprocessed chest radiographs."""
    card = load_card(CARD)
    images = [
        prepare_for_model(chest_dx(seed=i, size=128), size=card.input.size, windowing=card.preprocessing.windowing)
        for i in range(count)
    ]
    return card, load_network(card, torch.device("cpu")), images


def test_network_scores_a_batch_of_preprocessed_images() -> None:
    card, network, images = _network_and_images(2)
    assert images[0].shape == (128, 128) and images[0].dtype == np.float32 and 0 <= images[0].min() <= 1
    predictions = predict_batch(network, card, images, torch.device("cpu"))
    assert len(predictions) == 2 and predictions[0].model.trained is True
    assert all(0.0 <= score <= 1.0 for score in predictions[0].scores.values())
    with pytest.raises(ModelError, match="128x128"):
        predict_batch(network, card, [np.zeros((10, 10), np.float32)], torch.device("cpu"))


def test_images_that_overflow_half_precision_are_read_again_in_float32_and_only_they() -> None:
    """On a GPU the backbone runs in fp16; an image whose activations overflow it got NaN scores. Here the CPU's
    fp16 autocast overflows the same way on an image a million times too bright."""
    from qure_ray.models.cam import forward_with_cam
    from qure_ray.models.inference import half_precision_forward

    _, network, images = _network_and_images(3)
    images[1] = images[1] * 1e6
    batch = torch.from_numpy(np.stack(images)).unsqueeze(1)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.float16):
            half_logits, half_cams = forward_with_cam(network, batch)
        logits, cams = half_precision_forward(network, batch)
        full_logits, full_cams = forward_with_cam(network, batch)
    assert torch.isfinite(half_logits).all(dim=1).tolist() == [True, False, True]  # the overflow is real
    assert torch.isfinite(logits).all() and torch.isfinite(cams).all()
    assert torch.allclose(logits[1], full_logits[1]) and torch.allclose(cams[1], full_cams[1], atol=1e-3)
    for row in (0, 2):  # the others keep their half-precision pass
        assert torch.equal(logits[row], half_logits[row]) and torch.equal(cams[row], half_cams[row])


def test_verdict_uses_per_label_thresholds() -> None:
    card = load_card(CARD)
    scores = {label.name: label.threshold - 0.001 for label in card.labels}  # just below each threshold
    assert verdict(card, scores) == (TriageStatus.ROUTINE, dict.fromkeys(card.label_names, False))
    scores["pneumothorax"] = card.labels[card.label_names.index("pneumothorax")].threshold
    triage, decisions = verdict(card, scores)
    assert triage is TriageStatus.CRITICAL and [k for k, v in decisions.items() if v] == ["pneumothorax"]


def test_deploy_time_gpu_check_names_the_setting() -> None:
    from qure_ray.app import check_gpu_request

    check_gpu_request(0, available=0)
    check_gpu_request(0.5, available=1)
    with pytest.raises(ConfigError, match=r"QURE_MODEL_NUM_GPUS: 1 GPU.*has 0 GPU.*QURE_MODEL_GPUS_ON_DEMAND"):
        check_gpu_request(1, available=0)
    check_gpu_request(1, available=0, on_demand=True)  # a GPU group scaling from zero: replicas wait for it
    with pytest.raises(ConfigError, match="QURE_MODEL_GPUS_ON_DEMAND: 2 is not allowed"):
        Settings.load({"QURE_MODEL_GPUS_ON_DEMAND": 2}, {})
    assert Settings.load({"QURE_MODEL_GPUS_ON_DEMAND": "1"}, {}).model_gpus_on_demand == 1


def test_heatmaps_come_with_the_scores_and_match_the_logits() -> None:
    from qure_ray.models.cam import forward_with_cam

    card = load_card(CARD)
    network = load_network(card, torch.device("cpu"))
    batch = torch.rand(2, 1, 128, 128)
    with torch.inference_mode():
        logits, cams = forward_with_cam(network, batch)
        assert torch.allclose(logits, network(batch), atol=1e-4)
    assert cams.shape == (2, 5, 8, 8) and float(cams.min()) >= 0 and float(cams.max()) <= 1
    prediction = predict_batch(network, card, [batch[0, 0].numpy()], torch.device("cpu"))[0]
    assert prediction.heatmaps is not None and prediction.heatmaps.shape == (5, 8, 8)


def test_batching_comes_from_the_card_unless_the_settings_override_it() -> None:
    card = load_registry(SHIPPED_MODELS_DIR, verify_weights=False)[UseCase.QER]
    assert card.serving.max_batch_size == 16
    assert card.batching() == card.serving
    overridden = card.batching(max_batch_size=4, batch_wait_timeout_s=0.5)
    assert (overridden.max_batch_size, overridden.batch_wait_timeout_s) == (4, 0.5)


def test_only_the_first_frame_is_decoded() -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate, generate_frames

    from qure_ray.dicom.pixels import decode_grayscale

    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    first, _ = generate_frames(ds.PixelData, number_of_frames=2)
    ds.PixelData = encapsulate([first, b"\x01not RLE"])  # frame 2 is broken: decoding it would raise
    image = decode_grayscale(ds)
    assert image.shape == (100, 100) and image.dtype == np.float32


@pytest.mark.parametrize(
    "preprocessing",
    [{"window": "fixed"}, {"window": "fixed", "center": 40}, {"window": "dataset", "center": 40, "width": 80},
     {"window": "dataset", "center": 40},
     {"window": "fixed", "center": 40, "width": 0}, {"window": "fixed", "center": "nan", "width": 80},
     {"window": "fixed", "center": 40, "width": "inf"}],
)  # fmt: skip
def test_a_fixed_window_takes_a_center_and_a_width_and_nothing_else_does(
    tmp_path: Path, preprocessing: dict[str, object]
) -> None:
    with pytest.raises(ConfigError, match="preprocessing"):
        load_card(copy_card(tmp_path, preprocessing=preprocessing))


def test_a_head_ct_slice_reaches_the_model_the_same_whatever_window_it_carries() -> None:
    """Trained on slices written with the brain window: one without a window, or with a bone window first, is
    read through the brain window too (with its own window it scored 0.004 instead of 0.9996 for a bleed)."""
    from qure_ray.dicom.synthetic import to_bytes
    from qure_ray.models.phantoms import head_ct_phantom, to_dicom

    head = load_registry(SHIPPED_MODELS_DIR)[UseCase.QER]
    brain = to_dicom(head_ct_phantom(seed=3, findings={"intracranial_haemorrhage"}))
    bone_first, no_window = pydicom.dcmread(io.BytesIO(brain)), pydicom.dcmread(io.BytesIO(brain))
    bone_first.WindowCenter, bone_first.WindowWidth = [600, 40], [2800, 80]
    del no_window.WindowCenter, no_window.WindowWidth
    inputs = [
        prepare_for_model(data, size=head.input.size, windowing=head.preprocessing.windowing)
        for data in (brain, to_bytes(bone_first), to_bytes(no_window))
    ]
    assert inputs[0].std() > 0.05
    np.testing.assert_array_equal(inputs[0], inputs[1])
    np.testing.assert_array_equal(inputs[0], inputs[2])


def test_the_head_runs_in_float32_under_autocast() -> None:
    """Thresholds are fitted in float32 to 4 decimals: a half-precision head could flip a borderline image."""
    from qure_ray.models.cam import forward_with_cam

    card = load_card(CARD)
    network = load_network(card, torch.device("cpu"))
    batch = torch.rand(2, 1, card.input.size, card.input.size)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # as CUDA's fp16 autocast
        logits, cams = forward_with_cam(network, batch)
    assert logits.dtype == torch.float32 and cams.dtype == torch.float32
    with torch.inference_mode():
        reference, _ = forward_with_cam(network, batch)
    torch.testing.assert_close(logits, reference, atol=0.05, rtol=0.05)  # features in bfloat16, head not
