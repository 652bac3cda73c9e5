"""A stored frame rendered as a picture (WADO-RS rendered resources, PS3.18 §10.4.1.1.3 and §8.3.5): what a
partner's web page shows as a preview, as a reader sees the frame (`pixels.displayed`: rescaled, windowed,
MONOCHROME1 inverted; colour as luminance, as the models read it).

Query parameters (PS3.18 §8.3.5.1): `window=center,width[,linear]` (else the data set's window, else
percentiles), `viewport=width,height` (scaled down to fit, aspect kept; never up), `quality=1..100` for JPEG.
Other parameters of the standard (annotation, charset, iccprofile, the viewport's source region) are refused
with 400, not ignored: the picture would not be what was asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image

from qure_ray.dicom.frames import StoredObject
from qure_ray.dicom.pixels import DATASET_WINDOW, Windowing, displayed
from qure_ray.errors import BadRequestError
from qure_ray.media_types import media_ranges

RENDERED_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
"""What a frame can be rendered as, the default first (PS3.18 Table 8.7.4-2: JPEG)."""
_PARAMETERS = frozenset({"window", "viewport", "quality"})
MAX_VIEWPORT = 8192


@dataclass(frozen=True)
class Rendering:
    media_type: str
    windowing: Windowing = DATASET_WINDOW
    viewport: tuple[int, int] | None = None
    quality: int = 90

    @classmethod
    def asked(cls, accept: str, query: Mapping[str, str]) -> Rendering:
        """The rendering an Accept header and query ask for; 400 for a parameter this server does not apply, 406
        for an Accept that admits neither JPEG nor PNG."""
        unknown = sorted(set(query) - _PARAMETERS)
        if unknown:
            applied = sorted(_PARAMETERS)
            raise BadRequestError(f"rendering parameters {unknown} are not supported; this server applies {applied}")
        return cls(
            media_type=_media_type(accept),
            windowing=_window(query.get("window")),
            viewport=_viewport(query.get("viewport")),
            quality=_quality(query.get("quality")),
        )

    def render(self, stored: StoredObject, number: int) -> bytes:
        """Frame `number` (1-based) of `stored`, rendered; 404 past its last frame."""
        stored.require_decodable(number)
        shown = displayed(stored.dataset, windowing=self.windowing, frame=number - 1)
        picture = Image.fromarray(np.round(shown * 255).astype(np.uint8))  # 8-bit grey
        if self.viewport is not None:
            picture.thumbnail(self.viewport, Image.Resampling.LANCZOS)
        buffer = BytesIO()
        if self.media_type == "image/jpeg":
            picture.save(buffer, format="JPEG", quality=self.quality)
        else:
            picture.save(buffer, format="PNG")
        return buffer.getvalue()


def _media_type(accept: str) -> str:
    if not accept.strip():
        return next(iter(RENDERED_TYPES))
    for name, _ in media_ranges(accept):
        if name in RENDERED_TYPES:
            return name
        if name in ("*/*", "image/*"):
            return next(iter(RENDERED_TYPES))
    raise BadRequestError(
        f"a rendered frame is sent as {' or '.join(RENDERED_TYPES)}, which the Accept header ({accept[:200]!r}) "
        "does not admit",
        http_status=406,
    )


def _numbers(text: str, what: str, count: range) -> list[float]:
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count or not all(math.isfinite(v) for v in values):
        raise BadRequestError(f"{what}; got {text[:60]!r}")
    return values


def _window(text: str | None) -> Windowing:
    if text is None:
        return DATASET_WINDOW
    parts = text.split(",")
    if len(parts) == 3 and parts.pop().strip().lower() != "linear":
        raise BadRequestError(f"window function in {text[:60]!r} is not supported; this server applies linear")
    values = _numbers(",".join(parts), "window is center,width[,linear] with a width above 0", range(2, 3))
    if values[1] <= 0:
        raise BadRequestError(f"window is center,width[,linear] with a width above 0; got {text[:60]!r}")
    return Windowing("fixed", values[0], values[1])


def _viewport(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    what = f"viewport is width,height in pixels, 1 to {MAX_VIEWPORT} (a source region is not supported)"
    width, height = _numbers(text, what, range(2, 3))
    if not (1 <= width <= MAX_VIEWPORT and 1 <= height <= MAX_VIEWPORT) or width % 1 or height % 1:
        raise BadRequestError(f"{what}; got {text[:60]!r}")
    return int(width), int(height)


def _quality(text: str | None) -> int:
    if text is None:
        return Rendering.quality
    (value,) = _numbers(text, "quality is a whole number from 1 to 100", range(1, 2))
    if not 1 <= value <= 100 or value % 1:
        raise BadRequestError(f"quality is a whole number from 1 to 100; got {text[:20]!r}")
    return int(value)
