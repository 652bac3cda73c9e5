"""Pixel decoding and the display transforms a model needs: modality LUT, windowing, resize.

Pure functions on numpy arrays. "Performance": a 2 MB DX decodes and resizes in a few milliseconds; the
original array is converted to float32 once and never copied again after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, pixel_array

from qure_ray.dicom.validation import Rules
from qure_ray.errors import InvalidInstanceError


@dataclass(frozen=True)
class Windowing:
    """How a model's input is mapped to [0, 1]. `dataset`: the image's own Window Center/Width, else percentiles
    (radiographs: their window is chosen per image). `percentile`: always the percentiles. `fixed`: `center` and
    `width` in modality units for every image, whatever it carries (a head CT's brain window, 40/80 HU: a slice
    without a window, or with a bone window first, would otherwise look nothing like what the model learned)."""

    mode: Literal["dataset", "percentile", "fixed"] = "dataset"
    center: float | None = None
    width: float | None = None

    def __post_init__(self) -> None:
        if self.mode != "fixed":
            if self.center is not None or self.width is not None:
                raise ValueError(f"window: {self.mode} takes no center or width; fixed does")
        elif self.center is None or self.width is None or not _usable(self.center, self.width):
            raise ValueError(f"window: fixed takes a finite center and a width above 0, not {self.center}/{self.width}")

    def window_of(self, dataset: Dataset, frame: int = 0) -> tuple[float | None, float | None]:
        if self.mode == "fixed":
            return self.center, self.width
        return _window_of(dataset, frame) if self.mode == "dataset" else (None, None)


DATASET_WINDOW = Windowing()


def decode_grayscale(dataset: Dataset, *, frame: int = 0, failure: Rules = Rules.UNREADABLE) -> NDArray[np.float32]:
    """One frame (0-based; the first by default) as float32 in modality units (Rescale Slope/Intercept applied, the
    frame's own in an enhanced multi-frame object), as stored: MONOCHROME1 is not inverted here (a window applies
    to these values; see `displayed`). Colour is reduced to luminance, PALETTE COLOR after its lookup table. A
    frame that cannot be read so raises `failure`.

    Only that frame is decoded: a multi-frame object's other frames would cost memory and time for nothing."""
    pixels = stored_values(dataset, failure, frame)
    image = pixels.astype(np.float32)
    if image.ndim == 3:  # colour: luminance
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    slope, intercept = _rescale_of(dataset, failure, frame)
    if slope != 1 or intercept != 0:
        image = _rescaled(image, slope, intercept)
    if pixels.dtype.kind == "f" or slope != 1 or intercept != 0:
        _require_finite(image, failure)
    return image


def check_decodable(dataset: Dataset, *, failure: Rules) -> None:
    """What ingest asks of the first frame: that `decode_grayscale` reads it, without making its float32 copy
    (on a 3000 x 3000 frame that copy costs as much as the whole parse). Integer values are finite after the
    rescale when the two extremes are: the rescale is monotonic, and luminance stays between a pixel's samples."""
    pixels = stored_values(dataset, failure)
    slope, intercept = _rescale_of(dataset, failure)
    if pixels.dtype.kind == "f":
        _require_finite(_rescaled(pixels, slope, intercept), failure)
    elif slope != 1 or intercept != 0:
        _require_finite(_rescaled(np.array([pixels.min(), pixels.max()], dtype=np.float32), slope, intercept), failure)


def stored_values(dataset: Dataset, failure: Rules, frame: int = 0) -> NDArray[Any]:
    """One frame's stored values as pydicom decodes them, PALETTE COLOR through its lookup table."""
    try:
        pixels: NDArray[Any] = pixel_array(dataset, index=frame)
        if str(dataset.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, dataset)
    except Exception as exc:  # pydicom raises many kinds when a codec is missing or the data is corrupt
        raise failure.value.fail(f"pixel data could not be decoded ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return pixels


def _rescaled(values: NDArray[Any], slope: float, intercept: float) -> NDArray[np.float32]:
    with np.errstate(over="ignore", invalid="ignore"):  # what overflows is refused by `_require_finite`
        rescaled: NDArray[np.float32] = values * np.float32(slope) + np.float32(intercept)
    return rescaled


def _require_finite(values: NDArray[Any], failure: Rules) -> None:
    if not np.isfinite(values).all():
        # float pixel data or a rescale with NaN or infinity: NaN windows to NaN, which would score as "routine"
        raise failure.value.fail("the pixel values are NaN or infinite (float pixel data or rescale)")


def displayed(dataset: Dataset, *, windowing: Windowing = DATASET_WINDOW, frame: int = 0) -> NDArray[np.float32]:
    """One frame (0-based) in [0, 1] as a reader sees it, bright for dense: windowed (by default the data set's window
    when present, else percentiles), then inverted for MONOCHROME1. The order is the standard's (the VOI LUT
    applies to modality values, PS3.3 C.11.2); inverting first put a MONOCHROME1 image's window on the wrong
    values (a chest radiograph came out nearly black)."""
    center, width = windowing.window_of(dataset, frame)
    shown = window(decode_grayscale(dataset, frame=frame), center=center, width=width)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        return np.float32(1) - shown
    return shown


def window(
    image: NDArray[np.float32], *, center: float | None = None, width: float | None = None
) -> NDArray[np.float32]:
    """Map to [0, 1]: with a window when given and usable (finite, wider than 0: "NaN" would window the image to
    NaN), else between the 0.5th and 99.5th percentiles, or the extremes where those are one value (a small
    bright object on a uniform background came out black)."""
    if center is None or width is None or not _usable(center, width):
        low, high = np.percentile(image, [0.5, 99.5])
        if high <= low:
            low, high = image.min(), image.max()
    else:
        low, high = center - width / 2, center + width / 2
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


def resize(image: NDArray[np.float32], *, size: int) -> NDArray[np.float32]:
    """Bilinear resize to `size` x `size` (aspect ratio not kept: radiographs are near-square)."""
    if image.shape == (size, size):
        return image
    resized = Image.fromarray(image, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def frame_count(dataset: Dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def functional_group_item(dataset: Dataset, sequence: str, frame: int) -> Dataset | None:
    """A frame's item of a functional group macro (enhanced multi-frame objects keep Rescale and Window there,
    PS3.3 C.7.6.16): the frame's own, else the shared one."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = dataset.get(groups)
        if items and len(items) > index and sequence in items[index] and items[index][sequence].value:
            item: Dataset = items[index][sequence].value[0]
            return item
    return None


def _rescale_of(dataset: Dataset, failure: Rules, frame: int = 0) -> tuple[float, float]:
    """Rescale Slope and Intercept: the data set's own, else the frame's Pixel Value Transformation."""
    source = dataset if "RescaleSlope" in dataset or "RescaleIntercept" in dataset else None
    source = source or functional_group_item(dataset, "PixelValueTransformationSequence", frame) or dataset
    slope, intercept = source.get("RescaleSlope", 1), source.get("RescaleIntercept", 0)
    try:  # both are VM 1; a second value is malformed, and `float` of it a TypeError
        return float(slope or 1), float(intercept or 0)
    except (TypeError, ValueError) as exc:
        raise failure.value.fail("Rescale Slope or Intercept is not one number") from exc


def _window_of(dataset: Dataset, frame: int = 0) -> tuple[float | None, float | None]:
    """The first Window Center/Width pair of the data set (or of the frame's Frame VOI LUT), if any."""
    if "WindowCenter" not in dataset:
        dataset = functional_group_item(dataset, "FrameVOILUTSequence", frame) or dataset
    try:
        center, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
        if center is None or width is None:
            return None, None
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None, None
    return center, width


def _usable(center: float, width: float) -> bool:
    return bool(np.isfinite(center) and np.isfinite(width) and width > 0)


def _first(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return value[0] if len(value) else None
    return value


def prepare_for_model(data: bytes, *, size: int, windowing: Windowing) -> NDArray[np.float32]:
    """From stored DICOM bytes to the model's input: decode, window (the model card's), resize. Only the first
    frame is read (a radiograph has one)."""
    dataset = pydicom.dcmread(BytesIO(data))
    return resize(displayed(dataset, windowing=windowing), size=size)


MAX_SLICES = 4096
"""The most frames of one object a series read slice by slice takes: a whole-body CT at 0.5 mm is about 4000."""


def prepare_slices(data: bytes, *, size: int, windowing: Windowing) -> tuple[NDArray[np.float32], dict[int, str]]:
    """Every frame of an object of a series read slice by slice, as the model's inputs (frames, size, size): a
    classic CT slice has one; an enhanced (or legacy converted) CT holds the whole series, each frame with its
    own rescale and window. With them, by 0-based frame, why a frame could not be read (its input is left zero):
    one broken frame costs its slice, not the series."""
    dataset = pydicom.dcmread(BytesIO(data))
    count = frame_count(dataset)
    if count > MAX_SLICES:
        raise Rules.TOO_LARGE.value.fail(f"{count} frames; a series is read up to {MAX_SLICES} slices")
    slices = np.zeros((count, size, size), dtype=np.float32)
    unreadable: dict[int, str] = {}
    for frame in range(count):
        try:
            slices[frame] = resize(displayed(dataset, windowing=windowing, frame=frame), size=size)
        except InvalidInstanceError as exc:
            unreadable[frame] = f"frame {frame + 1}: {exc}"
    return slices, unreadable
