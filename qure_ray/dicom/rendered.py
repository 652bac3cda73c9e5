"""A stored frame rendered as a picture (WADO-RS rendered resources, PS3.18 §10.4.1.1.3 and §8.3.5): what a
partner's web page shows as a preview. A grey frame is rescaled, windowed (its own window, else percentiles;
a VOI LUT Sequence or a sigmoid VOI LUT Function is not applied) and MONOCHROME1 inverted, as the outputs show
it (`pixels.displayed`); a colour frame is shown in colour (YBR as RGB, PALETTE COLOR through its table).

Query parameters (PS3.18 §8.3.5.1): `window=center,width[,linear|linear-exact]` for a grey frame (PS3.3
C.11.2.1.2; linear by default), `viewport=width,height` (scaled down to fit, aspect kept; never up),
`quality=1..100` for JPEG, `accept` in place of the header. Parameters of the standard this server does not
apply (annotation, iccprofile, the viewport's source region) are refused with 400, as the picture would not be
what was asked for; others are ignored (a browser's cache-buster).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset

from qure_ray.dicom.frames import StoredObject
from qure_ray.dicom.pixels import DATASET_WINDOW, Windowing, displayed, stored_values
from qure_ray.dicom.validation import Rules
from qure_ray.errors import BadRequestError, InvalidInstanceError
from qure_ray.media_types import media_ranges, refused_media_types

RENDERED_TYPES = ("image/jpeg", "image/png")
"""What a frame can be rendered as, the default first (PS3.18 Table 8.7.4-2: JPEG)."""
_REFUSED = frozenset({"annotation", "iccprofile"})
MAX_VIEWPORT = 8192
MAX_RENDERED_PIXELS = 40_000_000
"""Rendering works in float32 with a few copies (a 64 MP 1-bit frame took 750 MB): a larger frame is sent by
`/frames`, not as a picture."""
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?")
_LARGEST = 1e30


@dataclass(frozen=True)
class Rendering:
    media_type: str
    windowing: Windowing = DATASET_WINDOW
    viewport: tuple[int, int] | None = None
    quality: int = 90

    @classmethod
    def asked(cls, accept: str, query: Mapping[str, str], repeated: frozenset[str] = frozenset()) -> Rendering:
        """The rendering an Accept header (or the `accept` parameter) and the query ask for; 400 for a parameter
        this server does not apply or one given twice (`repeated`), 406 for an Accept of neither JPEG nor PNG."""
        refused = sorted((set(query) & _REFUSED) | (repeated & {"window", "viewport", "quality", "accept"}))
        if refused:
            raise BadRequestError(f"rendering parameters {refused} are not applied by this server, or given twice")
        return cls(
            media_type=_media_type(query.get("accept", accept)),
            windowing=_window(query.get("window")),
            viewport=_viewport(query.get("viewport")),
            quality=_quality(query.get("quality")),
        )

    def render(self, stored: StoredObject, number: int) -> bytes:
        """Frame `number` (1-based) of `stored`, rendered; 404 past its last frame, 406 for a frame this server
        cannot render."""
        stored.require_decodable(number)
        dataset = stored.dataset
        pixels = int(dataset.Rows) * int(dataset.Columns)
        if pixels > MAX_RENDERED_PIXELS:
            raise BadRequestError(
                f"the frame has {pixels} pixels; pictures are made of at most {MAX_RENDERED_PIXELS} "
                "(fetch its /frames instead)",
                http_status=406,
            )
        try:
            picture = Image.fromarray(_shown(dataset, number - 1, self.windowing))
        except InvalidInstanceError as exc:
            raise BadRequestError(f"frame {number} cannot be decoded: {exc}", http_status=406) from exc
        if self.viewport is not None:
            picture.thumbnail(self.viewport, Image.Resampling.LANCZOS)
        buffer = BytesIO()
        if self.media_type == "image/jpeg":
            picture.save(buffer, format="JPEG", quality=self.quality)
        else:
            picture.save(buffer, format="PNG")
        return buffer.getvalue()


def _shown(dataset: Dataset, index: int, windowing: Windowing) -> NDArray[np.uint8]:
    """Frame `index` as 8-bit grey or RGB."""
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric.startswith("MONOCHROME"):
        return np.round(displayed(dataset, windowing=windowing, frame=index) * 255).astype(np.uint8)
    values = stored_values(dataset, Rules.UNREADABLE, index)  # YBR as RGB, PALETTE COLOR through its table
    if values.dtype != np.uint8:  # 16-bit colour (a palette's entries, or 16 bits stored): its top byte
        top = max(1, int(values.max()).bit_length())
        values = (values.astype(np.uint32) * 255 // ((1 << top) - 1)).astype(np.uint8)
    return np.ascontiguousarray(values)


def _media_type(accept: str) -> str:
    if not accept.strip():
        return RENDERED_TYPES[0]
    refused = refused_media_types(accept)
    for name, _ in media_ranges(accept):
        if name in RENDERED_TYPES:
            return name
        if name in ("*/*", "image/*"):
            admitted = [media_type for media_type in RENDERED_TYPES if media_type not in refused]
            if admitted:
                return admitted[0]
    raise BadRequestError(
        f"a rendered frame is sent as {' or '.join(RENDERED_TYPES)}, which the Accept header ({accept[:200]!r}) "
        "does not admit",
        http_status=406,
    )


def _numbers(text: str, what: str, count: int) -> list[float]:
    items = [item.strip() for item in text.split(",")]
    if len(items) != count or not all(_NUMBER.fullmatch(item) for item in items):
        raise BadRequestError(f"{what}; got {text[:60]!r}")
    values = [float(item) for item in items]
    if any(abs(value) >= _LARGEST for value in values):
        raise BadRequestError(f"{what}; got {text[:60]!r}")
    return values


def _window(text: str | None) -> Windowing:
    """PS3.3 C.11.2.1.2: LINEAR (the default) is LINEAR_EXACT with center - 0.5 and width - 1."""
    if text is None:
        return DATASET_WINDOW
    what = "window is center,width[,linear|linear-exact] with a width of at least 1 (linear) or above 0"
    parts = text.split(",")
    function = parts.pop().strip().lower() if len(parts) == 3 else "linear"
    if function not in ("linear", "linear-exact"):
        raise BadRequestError(f"window function in {text[:60]!r} is not supported: linear or linear-exact")
    center, width = _numbers(",".join(parts), what, 2)
    if function == "linear":
        if width < 1:
            raise BadRequestError(f"{what}; got {text[:60]!r}")
        center, width = center - 0.5, max(width - 1, 1e-6)  # width 1: a threshold
    elif width <= 0:
        raise BadRequestError(f"{what}; got {text[:60]!r}")
    return Windowing("fixed", center, width)


def _viewport(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    what = f"viewport is width,height in whole pixels, 1 to {MAX_VIEWPORT} (a source region is not supported)"
    width, height = _numbers(text, what, 2)
    if not (1 <= width <= MAX_VIEWPORT and 1 <= height <= MAX_VIEWPORT) or width % 1 or height % 1:
        raise BadRequestError(f"{what}; got {text[:60]!r}")
    return int(width), int(height)


def _quality(text: str | None) -> int:
    if text is None:
        return Rendering.quality
    (value,) = _numbers(text, "quality is a whole number from 1 to 100", 1)
    if not 1 <= value <= 100 or value % 1:
        raise BadRequestError(f"quality is a whole number from 1 to 100; got {text[:20]!r}")
    return int(value)
