"""A stored instance's frames, bulk data and metadata as WADO-RS hands them out (PS3.18 §10.4).

Frames (`.../instances/{uid}/frames/1,3`) go out as stored where the Accept header admits it: a compressed
frame's codestream (`image/jpeg`, `image/jls`, `image/jp2`, `image/dicom-rle`), a native frame's bytes.
`application/octet-stream` without `transfer-syntax=*` asks for native frames in Explicit VR Little Endian:
a compressed frame is then decoded (a lossy colour JPEG comes out RGB, as PS3.5 §8.2.1 has a decompressed YBR
frame; RLE and the rest keep their photometric interpretation), a big-endian one swapped. Frame numbers are
1-based, as the URL names them.

Metadata is the DICOM JSON model (PS3.18 §F.2) of the whole data set. Pixel Data, and every other top-level
binary value over `BULK_BYTES`, is named by a BulkDataURI (`.../bulkdata/{tag}`), so a 30 MB private blob
is not inlined as 40 MB of base64.

The stored object is read whole (the store has no ranged reads here), but Pixel Data's value is not copied
out of it: frames are views of the stored bytes, read once per request however many frames are asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

from qure_ray.dicom.codestream import frame_declared_size
from qure_ray.dicom.pixels import frame_count
from qure_ray.dicom.standards import COMPRESSED_TRANSFER_SYNTAXES, FRAME_MEDIA_TYPES, LITTLE_ENDIAN_NATIVE
from qure_ray.errors import BadRequestError, NotFoundError
from qure_ray.media_types import media_ranges, refused_media_types

OCTET_STREAM = "application/octet-stream"
NATIVE = str(ExplicitVRLittleEndian)
"""The transfer syntax of an `application/octet-stream` frame unless the request asks for `transfer-syntax=*`."""
PIXEL_DATA = Tag(0x7FE0, 0x0010)
BULK_BYTES = 1024
"""Top-level binary values longer than this are bulk data in metadata (pydicom's default threshold)."""
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_RGB_AFTER_DECODING = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
"""Lossy JPEG: the codec converts YBR to RGB. Other codecs, and native data, keep what the data set says."""
_PIXEL_MODULE = ("SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "Rows", "Columns",
                 "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation")  # fmt: skip
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}
_WHOLE_MULTIPART = ("*/*", "multipart/*", "multipart/related")
_FRAME_NUMBER = re.compile(r"[0-9]{1,9}")


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
    """The rendition the Accept header prefers (by q, then its order) among those it admits for frames stored in
    transfer syntax `stored`; 406 when it admits none. No header, or any media type, gets the frames as stored."""
    compressed = stored in COMPRESSED_TRANSFER_SYNTAXES
    native = FrameRendition(OCTET_STREAM, NATIVE, decoded=compressed)
    as_stored = FrameRendition(FRAME_MEDIA_TYPES[stored], stored) if compressed else native
    if not accept.strip():
        return as_stored
    refused = refused_media_types(accept)
    for name, params in media_ranges(accept):
        if name not in _WHOLE_MULTIPART:
            continue
        kind = params.get("type", "*/*") if name == "multipart/related" else "*/*"
        kind = _ALIASES.get(kind, kind)
        syntax = params.get("transfer-syntax")
        if kind == OCTET_STREAM:
            if syntax in (None, NATIVE):
                return native
            if syntax == "*" or (compressed and syntax == stored):
                return FrameRendition(OCTET_STREAM, stored) if compressed else native
        elif kind == "*/*" or (compressed and kind in ("image/*", as_stored.media_type)):
            wildcard = kind != as_stored.media_type
            if syntax in (None, "*", as_stored.transfer_syntax) and not (wildcard and as_stored.media_type in refused):
                return as_stored
            if kind == "*/*" and syntax in (None, NATIVE) and OCTET_STREAM not in refused:
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
        if not _FRAME_NUMBER.fullmatch(item) or int(item) < 1:
            raise BadRequestError(f"frame numbers are whole numbers from 1, separated by commas; got {item[:20]!r}")
        numbers.append(int(item))
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise BadRequestError(f"each frame is asked for once; repeated: {repeated[:10]}")
    return numbers


@dataclass(frozen=True)
class StoredObject:
    """A stored original (ingest validated it) read for WADO-RS: its data set with values over `BULK_BYTES` left
    unread, and Pixel Data's value as a view of the stored bytes."""

    dataset: Dataset
    data: bytes
    syntax: str

    @classmethod
    def read(cls, data: bytes) -> StoredObject:
        dataset = pydicom.dcmread(BytesIO(data), defer_size=BULK_BYTES)
        return cls(dataset, data, str(dataset.file_meta.get("TransferSyntaxUID", "")))

    @property
    def frames(self) -> int:
        return frame_count(self.dataset)

    def value_stream(self, tag: int) -> tuple[BytesIO, int] | None:
        """A top-level element's value: a stream at its start and its length (-1: encapsulated, to its sequence
        delimiter); the stored bytes themselves while it was left unread (a BytesIO of `bytes` copies nothing).
        None if absent."""
        raw = self.dataset.get_item(tag, keep_deferred=True)
        if raw is None:
            return None
        if isinstance(raw, RawDataElement) and raw.value is None and self.syntax != DeflatedExplicitVRLittleEndian:
            stream = BytesIO(self.data)
            stream.seek(raw.value_tell)
            return stream, -1 if raw.length == 0xFFFFFFFF else raw.length
        value = self.dataset[tag].value  # read already, or Deflated (its offsets are in the inflated stream)
        value = value if isinstance(value, bytes) else bytes(value)
        return BytesIO(value), len(value)

    def value_bytes(self, tag: int) -> bytes | None:
        """A top-level element's value of defined length (encapsulated Pixel Data is read by `pixel_frames`)."""
        found = self.value_stream(tag)
        return None if found is None else found[0].read() if found[1] < 0 else found[0].read(found[1])

    def pixel_frames(self, numbers: list[int], rendition: FrameRendition) -> Iterator[bytes]:
        """Frames `numbers` as `rendition` sends them, in that order; 404 past the last frame. The first is made
        here, before any answer begins, so that what cannot be sent is an error status, not a cut stream."""
        count, (stream, _) = self.frames, self._pixels(numbers)
        if self.syntax in COMPRESSED_TRANSFER_SYNTAXES:
            codestreams = _codestreams(stream, count, set(numbers))
            made = (self._codestream(number, codestreams[number], rendition) for number in numbers)
        else:
            start = stream.tell()
            made = (self._native(stream, start, number, count) for number in numbers)
        first = next(made)
        return _then(first, made)

    def require_decodable(self, number: int) -> None:
        """404 past the last frame; 406 for a compressed frame whose codestream declares another size than the
        data set (stored before ingest checked every frame: decoding it could take gigabytes)."""
        stream, _ = self._pixels([number])
        if self.syntax in COMPRESSED_TRANSFER_SYNTAXES:
            self._check_declared(number, _codestreams(stream, self.frames, {number})[number])

    def _pixels(self, numbers: list[int]) -> tuple[BytesIO, int]:
        """Pixel Data's value (`value_stream`); 404 when absent or past the last frame."""
        pixels, missing = self.value_stream(PIXEL_DATA), [n for n in numbers if n > self.frames]
        if pixels is None or missing:
            count = 0 if pixels is None else self.frames
            raise NotFoundError(f"the instance has {count} frame(s); no frame {(missing or numbers)[0]}")
        return pixels

    def _check_declared(self, number: int, codestream: bytes) -> None:
        rows, columns = int(self.dataset.Rows), int(self.dataset.Columns)
        declared = frame_declared_size(codestream, self.syntax)
        if declared is not None and declared != (rows, columns):
            raise BadRequestError(
                f"frame {number}'s codestream declares {declared[0]} x {declared[1]} pixels, the data set {rows} x "
                f"{columns}: it is sent only as stored",
                http_status=406,
            )

    def _codestream(self, number: int, codestream: bytes, rendition: FrameRendition) -> bytes:
        if not rendition.decoded:
            return codestream
        self._check_declared(number, codestream)
        try:
            return self._decode(encapsulate([codestream]), as_rgb=self.syntax in _RGB_AFTER_DECODING)
        except Exception as exc:  # pydicom's codecs raise many kinds on a corrupt codestream
            raise BadRequestError(
                f"frame {number} cannot be decoded ({type(exc).__name__}); it is sent only as stored", http_status=406
            ) from exc

    def _native(self, stream: BytesIO, start: int, number: int, count: int) -> bytes:
        """Frame `number` of native Pixel Data whose value begins at `start` in `stream`."""
        if int(self.dataset.BitsAllocated) == 1:  # frames need not start on a byte: unpack them all
            stream.seek(start)
            self.dataset.PixelData = stream.read(get_expected_length(self.dataset, "bytes"))
            values = pixel_array(self.dataset, index=number - 1, as_rgb=False)
            return np.packbits(values.astype(np.uint8).ravel(), bitorder="little").tobytes()
        length = get_expected_length(self.dataset, "bytes") // count
        stream.seek(start + (number - 1) * length)
        frame = stream.read(length)
        return frame if self.syntax in LITTLE_ENDIAN_NATIVE else self._decode(frame, as_rgb=False)

    def _decode(self, pixel_data: bytes, *, as_rgb: bool) -> bytes:
        """One frame's Pixel Data decoded through a data set of that frame alone (pydicom would walk a multi-frame
        object's fragments again for each frame), as little-endian native bytes."""
        single = Dataset()
        single.file_meta = FileMetaDataset()
        single.file_meta.TransferSyntaxUID = UID(self.syntax)
        for keyword in _PIXEL_MODULE:
            if keyword in self.dataset:
                single[keyword] = self.dataset[keyword]
        single.NumberOfFrames = 1
        single.PixelData = pixel_data
        values: np.ndarray[Any, Any] = pixel_array(single, as_rgb=as_rgb)
        return np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False).tobytes()

    def bulk_tags(self) -> list[int]:
        """Top-level binary elements over `BULK_BYTES` (left unread), Pixel Data included."""
        return [tag for tag in self.dataset.keys() if self._is_bulk(tag)]  # noqa: SIM118 (iterating reads values)

    def _is_bulk(self, tag: int) -> bool:
        raw = self.dataset.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.value is not None:
            return tag == PIXEL_DATA
        return tag == PIXEL_DATA or _vr_of(raw) in _BINARY_VRS

    def metadata(self, bulk_url: str) -> dict[str, Any]:
        """The DICOM JSON model, bulk data as BulkDataURIs `{bulk_url}/{tag}`."""
        bulk = self.bulk_tags()
        slim = Dataset()
        for tag in self.dataset.keys():  # noqa: SIM118 (iterating the data set would read every value)
            if tag not in bulk:
                slim.add(self.dataset[tag])
        document: dict[str, Any] = slim.to_json_dict(bulk_data_threshold=2**31, suppress_invalid_tags=True)
        for bulk_tag in bulk:
            document[f"{bulk_tag:08X}"] = {"vr": self._bulk_vr(bulk_tag), "BulkDataURI": f"{bulk_url}/{bulk_tag:08X}"}
        return dict(sorted(document.items()))

    def _bulk_vr(self, tag: int) -> str:
        if tag == PIXEL_DATA:
            wide = int(self.dataset.get("BitsAllocated") or 8) > 8
            return "OW" if wide and self.syntax not in COMPRESSED_TRANSFER_SYNTAXES else "OB"
        vr = _vr_of(self.dataset.get_item(tag, keep_deferred=True))
        return "OW" if " or " in vr else vr


def _vr_of(raw: object) -> str:
    """An element's VR as read, or else (implicit VR) the dictionary's; UN for a tag neither knows."""
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    tag = Tag(getattr(raw, "tag", 0))
    try:
        return "UN" if tag.is_private else str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _codestreams(stream: BytesIO, count: int, wanted: set[int]) -> dict[int, bytes]:
    """The wanted frames' codestreams (1-based) in one walk over the fragments: pydicom's `get_frame` walks from
    the start for each frame (all 4000 frames of a 23 MB object without an offset table took 25 s)."""
    found: dict[int, bytes] = {}
    for number, codestream in enumerate(generate_frames(stream, number_of_frames=count), 1):
        if number in wanted:
            found[number] = codestream
            if len(found) == len(wanted):
                return found
    raise NotFoundError(f"the encapsulated pixel data holds fewer frames than NumberOfFrames={count}")


def _then(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
