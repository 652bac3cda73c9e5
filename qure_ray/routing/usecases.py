"""Use-case rules: which model workflow an instance goes to, decided from its DICOM tags alone."""

from __future__ import annotations

from dataclasses import dataclass

from qure_ray.records import UseCase
from qure_ray.routing.quality import LATERAL_VIEWS

RADIOGRAPHY_MODALITIES = frozenset({"CR", "DX"})
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG"})
CHEST_VIEWS = frozenset({"PA", "AP"})


@dataclass(frozen=True)
class RoutingDecision:
    usecase: UseCase
    reason: str


def route(*, modality: str, body_part: str, view_position: str) -> RoutingDecision:
    """CR/DX of the chest (by BodyPartExamined, or a frontal chest view) → `qxr`; anything else unsupported."""
    modality, body_part, view_position = modality.upper(), body_part.upper(), view_position.upper()
    if modality in RADIOGRAPHY_MODALITIES:
        if body_part in CHEST_BODY_PARTS:
            return RoutingDecision(UseCase.QXR, f"{modality} with BodyPartExamined {body_part}")
        if not body_part and view_position in LATERAL_VIEWS:
            return RoutingDecision(UseCase.QXR, f"{modality} with lateral view {view_position}")
        if not body_part and view_position in CHEST_VIEWS:
            return RoutingDecision(UseCase.QXR, f"{modality} with chest view {view_position}")
    return RoutingDecision(
        UseCase.UNSUPPORTED,
        f"no use case for Modality {modality or '(empty)'}, BodyPartExamined {body_part or '(empty)'}, "
        f"ViewPosition {view_position or '(empty)'}; supported: CR/DX chest radiographs (qxr)",
    )
