"""A stored instance's frames and metadata as WADO-RS hands them out (PS3.18 §10.4).

Frames (`.../instances/{uid}/frames/1,3`) go out as stored where the Accept header admits it: a compressed
frame's codestream (`image/jpeg`, `image/jls`, `image/jp2`, `image/dicom-rle`), a native frame's bytes.
`application/octet-stream` without `transfer-syntax=*` asks for native frames in Explicit VR Little Endian:
a compressed frame is then decoded (a colour JPEG comes out RGB, as PS3.5 §8.2.1 has a decompressed YBR
frame), a big-endian one swapped. Frame numbers are 1-based, as the URL names them.

Metadata is the DICOM JSON model (PS3.18 §F.2) of the data set without its Pixel Data, which is named by a
BulkDataURI: the frames resource of all the instance's frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import ExplicitVRLittleEndian

from qure_ray.dicom.standards import COMPRESSED_TRANSFER_SYNTAXES, FRAME_MEDIA_TYPES, LITTLE_ENDIAN_NATIVE
from qure_ray.errors import BadRequestError, NotFoundError
from qure_ray.media_types import media_ranges

OCTET_STREAM = "application/octet-stream"
NATIVE = str(ExplicitVRLittleEndian)
"""The transfer syntax of an `application/octet-stream` frame unless the request asks for `transfer-syntax=*`."""
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}
_WHOLE_MULTIPART = ("*/*", "multipart/*", "multipart/related")


@dataclass(frozen=True)
class FrameRendition:
    """How frames are sent: each part's media type and transfer syntax, and whether they are decoded to native."""

    media_type: str
    transfer_syntax: str
    decoded: bool = False

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def frame_rendition(accept: str, stored: str) -> FrameRendition:
    """The first rendition, in the Accept header's order, that the header admits for frames stored in transfer
    syntax `stored`; 406 when it admits none. No header, or any media type, gets the frames as stored."""
    compressed = stored in COMPRESSED_TRANSFER_SYNTAXES
    native = FrameRendition(OCTET_STREAM, NATIVE, decoded=compressed)
    as_stored = FrameRendition(FRAME_MEDIA_TYPES[stored], stored) if compressed else native
    if not accept.strip():
        return as_stored
    for name, params in media_ranges(accept):
        if name not in _WHOLE_MULTIPART:
            continue
        kind = params.get("type", "*/*") if name == "multipart/related" else "*/*"
        kind = _ALIASES.get(kind, kind)
        syntax = params.get("transfer-syntax")
        if kind == OCTET_STREAM:
            if syntax in (None, NATIVE):
                return native
            if syntax in ("*", stored):
                return FrameRendition(OCTET_STREAM, stored if compressed else NATIVE)
        elif kind == "*/*" or (compressed and kind in ("image/*", as_stored.media_type)):
            if syntax in (None, "*", as_stored.transfer_syntax):
                return as_stored
            if kind == "*/*" and syntax == NATIVE:
                return native
    what = f"{as_stored.media_type} (transfer syntax {as_stored.transfer_syntax})"
    offered = f"{what} or {OCTET_STREAM} ({NATIVE})" if compressed else what
    raise BadRequestError(
        f'frames of this instance are sent as multipart/related; type="{offered}", which the Accept header '
        f"({accept[:200]!r}) does not admit",
        http_status=406,
    )


def frame_numbers(frame_list: str) -> list[int]:
    """The 1-based frame numbers of a `/frames/{frame_list}` URL, in its order; 400 for anything else."""
    numbers = []
    for item in frame_list.split(","):
        if not item.strip().isdigit() or int(item) < 1:
            raise BadRequestError(f"frame numbers are whole numbers from 1, separated by commas; got {item[:20]!r}")
        numbers.append(int(item))
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise BadRequestError(f"each frame is asked for once; repeated: {repeated[:10]}")
    return numbers


def parse_stored(data: bytes, *, pixels: bool = True) -> Dataset:
    """A stored original (ingest validated it) as a data set; without its Pixel Data unless `pixels`."""
    return pydicom.dcmread(BytesIO(data), stop_before_pixels=not pixels)


def frame_count(dataset: Dataset) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def require_frames(dataset: Dataset, numbers: list[int]) -> None:
    """404 for a frame number past the instance's last frame."""
    count = frame_count(dataset)
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFoundError(f"the instance has {count} frame(s); there is no frame {missing[0]}")


def frame_bytes(dataset: Dataset, number: int, rendition: FrameRendition) -> bytes:
    """Frame `number` (1-based) of a data set read with its pixels, as `rendition` sends it."""
    stored = str(dataset.file_meta.TransferSyntaxUID)
    index, count = number - 1, frame_count(dataset)
    if stored in COMPRESSED_TRANSFER_SYNTAXES and not rendition.decoded:
        return get_frame(dataset.PixelData, index, number_of_frames=count)
    if stored in LITTLE_ENDIAN_NATIVE and int(dataset.BitsAllocated) % 8 == 0:
        length = get_expected_length(dataset, "bytes") // count
        return bytes(dataset.PixelData[index * length : (index + 1) * length])
    values: np.ndarray[Any, Any] = pixel_array(dataset, index=index)  # decoded, or big endian, or 1 bit a pixel
    if int(dataset.BitsAllocated) == 1:
        return np.packbits(values.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


def frames_of(data: bytes, numbers: list[int], rendition: FrameRendition) -> Iterator[bytes]:
    """The frames `numbers` of a stored original, one at a time (a decoded frame can be large)."""
    dataset = parse_stored(data)
    require_frames(dataset, numbers)
    return (frame_bytes(dataset, number, rendition) for number in numbers)


def metadata_json(dataset: Dataset, frames_url: str) -> dict[str, Any]:
    """The DICOM JSON model of a data set read without its pixels, Pixel Data as the BulkDataURI of all its
    frames at `frames_url` (the instance's `/frames` resource)."""
    document: dict[str, Any] = dataset.to_json_dict(bulk_data_threshold=2**31, suppress_invalid_tags=True)
    stored = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    wide = int(dataset.get("BitsAllocated") or 8) > 8 and stored not in COMPRESSED_TRANSFER_SYNTAXES
    numbers = ",".join(str(n) for n in range(1, frame_count(dataset) + 1))
    document["7FE00010"] = {"vr": "OW" if wide else "OB", "BulkDataURI": f"{frames_url}/{numbers}"}
    return document
