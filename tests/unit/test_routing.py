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
        ("DX", "", "LL", UseCase.UNSUPPORTED),
    ],
)
def test_chest_radiographs_go_to_qxr(modality: str, body_part: str, view: str, expected: UseCase) -> None:
    assert route(modality=modality, body_part=body_part, view_position=view).usecase is expected


def test_unsupported_reason_names_the_tags() -> None:
    reason = route(modality="CT", body_part="HEAD", view_position="").reason
    assert "CT" in reason and "HEAD" in reason and "qxr" in reason
