from __future__ import annotations

import numpy as np
import pytest

from qure_ray.dicom import read_instance
from qure_ray.dicom.pixels import prepare_for_model
from qure_ray.models.phantoms import (
    CHEST_FINDINGS,
    HEAD_CT_FINDINGS,
    chest_phantom,
    head_ct_phantom,
    to_dicom,
)


def test_phantoms_are_deterministic_and_vary_with_the_seed() -> None:
    assert np.array_equal(chest_phantom(seed=1).pixels, chest_phantom(seed=1).pixels)
    assert not np.array_equal(chest_phantom(seed=1).pixels, chest_phantom(seed=2).pixels)
    with pytest.raises(ValueError, match="unknown chest findings"):
        chest_phantom(seed=1, findings={"fracture"})


@pytest.mark.parametrize("finding", CHEST_FINDINGS)
def test_each_chest_finding_changes_the_picture(finding: str) -> None:
    normal = chest_phantom(seed=7).pixels.astype(np.float32)
    abnormal = chest_phantom(seed=7, findings={finding}).pixels.astype(np.float32)
    changed = np.abs(abnormal - normal) > 200
    assert changed.sum() > 30, f"{finding} leaves no visible signature"


def test_cardiomegaly_widens_the_heart() -> None:
    normal, enlarged = chest_phantom(seed=3).pixels, chest_phantom(seed=3, findings={"cardiomegaly"}).pixels
    row = int(normal.shape[0] * 0.6)
    threshold = float(np.median(normal[row]))
    assert (enlarged[row] > threshold).sum() > (normal[row] > threshold).sum() + 10


@pytest.mark.parametrize("finding", HEAD_CT_FINDINGS)
def test_each_head_ct_finding_changes_the_picture(finding: str) -> None:
    normal = head_ct_phantom(seed=5).pixels.astype(np.float32)
    abnormal = head_ct_phantom(seed=5, findings={finding}).pixels.astype(np.float32)
    assert (np.abs(abnormal - normal) > 20).sum() > 30


def test_phantoms_pass_ingest_validation_and_preprocess() -> None:
    chest = to_dicom(chest_phantom(seed=1, findings={"nodule"}))
    metadata = read_instance(chest).metadata
    assert (metadata.modality, metadata.body_part, metadata.view_position) == ("DX", "CHEST", "PA")
    assert prepare_for_model(chest, size=128, window_mode="dataset").std() > 0.05
    ct = to_dicom(
        head_ct_phantom(seed=1, findings={"intracranial_haemorrhage"}), instance_number=3, slice_location_mm=15
    )
    metadata = read_instance(ct).metadata
    assert (metadata.modality, metadata.body_part) == ("CT", "HEAD")
    image = prepare_for_model(ct, size=128, window_mode="dataset")
    assert image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0.05
