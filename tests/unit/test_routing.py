from __future__ import annotations

import pytest

from qure_ray.records import UseCase
from qure_ray.routing import route


@pytest.mark.parametrize(
    ("modality", "body_part", "view", "expected"),
    [
        ("DX", "CHEST", "PA", UseCase.QXR),
        ("CR", "chest", "", UseCase.QXR),
        ("DX", "", "AP", UseCase.QXR),
        ("DX", "HAND", "PA", UseCase.UNSUPPORTED),
        ("CT", "CHEST", "", UseCase.UNSUPPORTED),
        ("MR", "", "", UseCase.UNSUPPORTED),
        ("DX", "", "LL", UseCase.QXR),  # routed, then found unusable (lateral)
    ],
)
def test_chest_radiographs_go_to_qxr(modality: str, body_part: str, view: str, expected: UseCase) -> None:
    assert route(modality=modality, body_part=body_part, view_position=view).usecase is expected


def test_unsupported_reason_names_the_tags() -> None:
    reason = route(modality="CT", body_part="HEAD", view_position="").reason
    assert "CT" in reason and "HEAD" in reason and "qxr" in reason


def test_usability_of_supported_images() -> None:
    import numpy as np

    from qure_ray.routing.quality import blank_reason, unusable_reason

    assert unusable_reason(usecase=UseCase.QXR, view_position="PA", rows=512, columns=512) is None
    lateral = unusable_reason(usecase=UseCase.QXR, view_position="LL", rows=512, columns=512)
    assert lateral is not None and "lateral" in lateral
    tiny = unusable_reason(usecase=UseCase.QXR, view_position="PA", rows=32, columns=512)
    assert tiny is not None and "32x512" in tiny
    assert route(modality="DX", body_part="", view_position="LL").usecase is UseCase.QXR
    assert blank_reason(np.full((8, 8), 0.5, np.float32)) is not None
    assert blank_reason(np.random.default_rng(0).random((8, 8)).astype(np.float32)) is None
