"""Is an image of a supported modality usable by its model? Lateral and oblique views, tiny and blank images
are not.

Such images end as `unusable` (HTTP 206 with the reason), not as errors: the modality was right, the
picture cannot be read.
"""

from __future__ import annotations

import numpy as np

from qure_ray.records import UseCase

LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"})
OBLIQUE_VIEWS = frozenset({"RAO", "LAO", "RPO", "LPO", "RLO", "LLO", "OBLIQUE", "OBL"})
_NOT_FRONTAL = {**dict.fromkeys(LATERAL_VIEWS, "a lateral"), **dict.fromkeys(OBLIQUE_VIEWS, "an oblique")}
MIN_SIDE_PX = 64
MIN_CONTRAST = 0.01
"""Standard deviation of the windowed [0, 1] image below which it is taken as blank."""


def unusable_reason(*, usecase: UseCase, view_position: str, rows: int, columns: int) -> str | None:
    """Checks on the tags alone (before any pixel is decoded)."""
    if usecase is UseCase.QXR and (kind := _NOT_FRONTAL.get(view_position.upper())):
        return f"ViewPosition {view_position} is {kind} view; qxr reads frontal (PA or AP) chest radiographs"
    if min(rows, columns) < MIN_SIDE_PX:
        return f"the image is {rows}x{columns} pixels; at least {MIN_SIDE_PX} on each side is needed"
    return None


def blank_reason(image: np.ndarray) -> str | None:
    """Checks on the preprocessed image."""
    if not np.isfinite(image).all():  # NaN's contrast is NaN, which passes `<`
        return "the image has NaN or infinite values after windowing"
    contrast = float(image.std())
    if contrast < MIN_CONTRAST:
        return f"the image is blank (contrast {contrast:.4f} after windowing, below {MIN_CONTRAST})"
    return None
