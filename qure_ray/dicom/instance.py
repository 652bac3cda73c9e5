"""Reading one uploaded DICOM object: parse, validate against the rule table, extract metadata.

`read_instance(data)` is the single entry point; it either returns a `ParsedInstance` whose metadata is
complete, every value of which converts, and whose pixel data is present, long enough, and readable as the
pipeline reads it (frame 1 decodes and its modality values are finite), or raises `InvalidInstanceError`.
What an upload may expand to is bounded before it expands: a Deflated data set by the per-instance limit, a
compressed frame by `MAX_FRAME_BYTES`.
"""

from __future__ import annotations

import hashlib
import warnings
import zlib
from dataclasses import asdict, dataclass
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from qure_ray.dicom.codestream import declared_sizes, fragment_count
from qure_ray.dicom.pixels import check_decodable
from qure_ray.dicom.standards import (
    COMPRESSED_TRANSFER_SYNTAXES,
    IMAGE_STORAGE_SOP_CLASSES,
    SUPPORTED_PHOTOMETRIC,
    SUPPORTED_TRANSFER_SYNTAXES,
    body_part,
)
from qure_ray.dicom.uids import is_valid_uid
from qure_ray.dicom.validation import Rules
from qure_ray.errors import InvalidInstanceError

_PREAMBLE_LENGTH = 128
MAX_FRAME_BYTES = 256 * 1024 * 1024
"""The most one decoded frame may take: a 16-bit 8192 x 8192 radiograph is 128 MiB. A compressed frame is
checked against it before decoding, since a kilobyte of JPEG 2000 can declare 65535 x 65535."""
_INFLATE_CHUNK = 1024 * 1024
_META_SCAN_BYTES = 4096
"""Where a file meta group (and its Transfer Syntax UID) ends in any object worth reading: it is a few hundred
bytes after the 132-byte preamble and prefix."""


@dataclass(frozen=True, kw_only=True)
class InstanceMetadata:
    """What the platform keeps about an instance: identifiers and acquisition facts, never PHI."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    body_part: str
    view_position: str
    series_description: str
    rows: int
    columns: int
    transfer_syntax: str
    size_bytes: int
    sha256: str

    def to_reply(self) -> dict[str, Any]:
        """The `metadata` object of the Qure-style upload reply."""
        return {
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "SOPInstanceUID": self.sop_uid,
            "SOPClassUID": self.sop_class_uid,
            "Modality": self.modality,
            "BodyPartExamined": self.body_part,
            "ViewPosition": self.view_position,
            "Rows": self.rows,
            "Columns": self.columns,
            "TransferSyntaxUID": self.transfer_syntax,
            "size": self.size_bytes,
        }

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParsedInstance:
    dataset: Dataset
    metadata: InstanceMetadata


def read_instance(data: bytes, *, max_bytes: int | None = None) -> ParsedInstance:
    """Parse and validate one uploaded object. Raises `InvalidInstanceError` naming the broken rule.

    The first frame is decoded here, so that what is stored is known to decode.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise Rules.TOO_LARGE.value.fail(f"{len(data)} bytes exceeds the limit of {max_bytes} bytes")
    with warnings.catch_warnings():  # pydicom warns on invalid values; the rules below judge them
        warnings.simplefilter("ignore")
        if len(data) < _PREAMBLE_LENGTH + 4 or data[_PREAMBLE_LENGTH : _PREAMBLE_LENGTH + 4] != b"DICM":
            raise _not_part10(data)
        try:
            _check_inflated_size(data, max_bytes)
            dataset = pydicom.dcmread(BytesIO(data))
            # pydicom converts a value when it is first read: convert all now, so that a broken one is refused
            # here and not met later by a task (this also parses to the end, where truncation shows)
            dataset.walk(lambda _, element: None)
        except InvalidInstanceError:
            raise
        except InvalidDicomError as exc:
            raise Rules.NOT_DICOM.value.fail(str(exc)) from exc
        except Exception as exc:  # pydicom raises many kinds for truncated or corrupt data sets
            raise Rules.UNREADABLE.value.fail(f"parsing failed ({type(exc).__name__}: {exc})") from exc
        metadata = _extract_metadata(dataset, data)
        _check_supported(metadata)
        _check_pixel_data(dataset)
    return ParsedInstance(dataset, metadata)


def _check_inflated_size(data: bytes, max_bytes: int | None) -> None:
    """A Deflated data set may unpack to at most `max_bytes`: counted in chunks, before pydicom inflates it whole."""
    stream = BytesIO(data)
    stream.seek(_PREAMBLE_LENGTH + 4)
    meta = _read_file_meta_info(stream)  # pydicom's own reader of group 0002, without the data set after it
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian or max_bytes is None:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, size = data[stream.tell() :], 0
    while pending and not inflater.eof:
        size += len(inflater.decompress(pending, _INFLATE_CHUNK))
        if size > max_bytes:
            raise Rules.TOO_LARGE.value.fail(f"the Deflated data set unpacks to over {max_bytes} bytes")
        pending = inflater.unconsumed_tail


def _not_part10(data: bytes) -> InvalidInstanceError:
    """Tell a bare data set (no preamble, no file meta) from something that is not DICOM at all."""
    if _declares_deflate(data):  # its file meta without the preamble: parsing would inflate it all, unbounded
        return Rules.NO_PREAMBLE.value.fail("no 'DICM' prefix at byte 128, but the bytes start a Deflated data set")
    try:
        dataset = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
        looks_like_dicom = "SOPInstanceUID" in dataset or "SOPClassUID" in dataset
    except Exception:
        looks_like_dicom = False
    if looks_like_dicom:
        return Rules.NO_PREAMBLE.value.fail("no 'DICM' prefix at byte 128, but the bytes parse as a data set")
    return Rules.NOT_DICOM.value.fail(f"no 'DICM' prefix at byte 128 of a {len(data)}-byte object")


def _extract_metadata(dataset: Dataset, data: bytes) -> InstanceMetadata:
    uids = {}
    for keyword, tag in (
        ("StudyInstanceUID", "(0020,000D)"),
        ("SeriesInstanceUID", "(0020,000E)"),
        ("SOPInstanceUID", "(0008,0018)"),
        ("SOPClassUID", "(0008,0016)"),
    ):
        value = dataset.get(keyword)
        if value is None or str(value).strip() == "":
            raise Rules.MISSING_UID.value.fail(f"{tag} {keyword} is missing or empty")
        text = str(value).strip().rstrip("\x00")
        if not is_valid_uid(text):
            raise Rules.MALFORMED_UID.value.fail(f"{tag} {keyword} is {text[:80]!r}")
        uids[keyword] = text
    study, series, sop = uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]
    if len({study, series, sop}) < 3:  # a series' result is keyed by its UID, beside its instances' results
        raise Rules.UID_REUSED.value.fail(f"Study {study!r}, Series {series!r}, SOP Instance {sop!r}")
    meta_sop = str(dataset.file_meta.get("MediaStorageSOPInstanceUID", "")).strip().rstrip("\x00")
    if meta_sop and meta_sop != uids["SOPInstanceUID"]:
        raise Rules.SOP_MISMATCH.value.fail(f"{meta_sop!r} differs from {uids['SOPInstanceUID']!r}")
    return InstanceMetadata(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        modality=_text(dataset, "Modality"),
        body_part=body_part(dataset),
        view_position=_text(dataset, "ViewPosition").upper(),
        series_description=_text(dataset, "SeriesDescription")[:64],
        rows=_int(dataset, "Rows"),
        columns=_int(dataset, "Columns"),
        transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "")),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _check_supported(metadata: InstanceMetadata) -> None:
    if metadata.sop_class_uid not in IMAGE_STORAGE_SOP_CLASSES:
        name = UID(metadata.sop_class_uid).name
        raise Rules.SOP_CLASS_NOT_SUPPORTED.value.fail(f"{metadata.sop_class_uid} ({name}) is not accepted")
    if metadata.transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        name = UID(metadata.transfer_syntax).name if metadata.transfer_syntax else "missing"
        raise Rules.TRANSFER_SYNTAX_NOT_SUPPORTED.value.fail(
            f"{metadata.transfer_syntax or '(none)'} ({name}) cannot be decoded here"
        )


def _check_pixel_data(dataset: Dataset) -> None:
    if "PixelData" not in dataset:
        raise Rules.NO_PIXEL_DATA.value.fail("the data set has no Pixel Data element")
    rows, columns = _int(dataset, "Rows"), _int(dataset, "Columns")
    bits = _int(dataset, "BitsAllocated")
    samples = _int(dataset, "SamplesPerPixel", default=1)
    frames = _int(dataset, "NumberOfFrames", default=1)
    if rows <= 0 or columns <= 0 or bits <= 0 or samples <= 0 or frames <= 0:
        raise Rules.MISSING_IMAGE_ATTRIBUTE.value.fail(
            f"Rows={rows}, Columns={columns}, BitsAllocated={bits}, SamplesPerPixel={samples}, NumberOfFrames={frames}"
        )
    photometric = _text(dataset, "PhotometricInterpretation").upper()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise Rules.PHOTOMETRIC_NOT_SUPPORTED.value.fail(f"{photometric or '(missing)'!r} is not supported")
    frame_bytes = rows * columns * samples * max(1, (bits + 7) // 8)
    if frame_bytes > MAX_FRAME_BYTES:
        raise Rules.TOO_LARGE.value.fail(
            f"a frame of Rows={rows} x Columns={columns} x SamplesPerPixel={samples} x BitsAllocated={bits} "
            f"decodes to {frame_bytes} bytes, over the limit of {MAX_FRAME_BYTES}"
        )
    if frames > 1 and dataset.file_meta.TransferSyntaxUID in COMPRESSED_TRANSFER_SYNTAXES:
        fragments = fragment_count(dataset.PixelData)
        if fragments is not None and fragments < frames:  # a few KB declaring a million frames
            raise Rules.PIXEL_DATA_SHORT.value.fail(
                f"{fragments} fragment(s) of encapsulated pixel data for NumberOfFrames={frames}: each frame needs one"
            )
    for number, declared in declared_sizes(dataset.PixelData, dataset.file_meta.TransferSyntaxUID, frames):
        if declared != (rows, columns):
            raise Rules.PIXEL_DATA_UNDECODABLE.value.fail(
                f"frame {number}'s codestream declares {declared[0]} x {declared[1]} pixels, the data set Rows={rows} "
                f"x Columns={columns}"
            )
    if dataset.file_meta.TransferSyntaxUID not in COMPRESSED_TRANSFER_SYNTAXES:
        stored = 2 if photometric == "YBR_FULL_422" else samples  # 4:2:2 keeps two values per pixel, not three
        expected = (rows * columns * stored * bits * frames + 7) // 8
        actual = len(dataset.PixelData)
        if actual < expected:
            raise Rules.PIXEL_DATA_SHORT.value.fail(
                f"{actual} bytes for Rows={rows} x Columns={columns} x SamplesPerPixel={samples} x "
                f"BitsAllocated={bits} x frames={frames}, which needs {expected} bytes"
            )
    # frame 1 as the pipeline reads it (`decode_grayscale`): what is accepted here, the pipeline can read
    check_decodable(dataset, failure=Rules.PIXEL_DATA_UNDECODABLE)


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _int(dataset: Dataset, keyword: str, *, default: int = 0) -> int:
    value = dataset.get(keyword)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return 0


def _declares_deflate(data: bytes) -> bool:
    """Whether the object's file meta names the Deflated transfer syntax: pydicom inflates such a data set whole,
    however large it unpacks (`_check_inflated_size` bounds it for `read_instance`; other readers skip it)."""
    return DeflatedExplicitVRLittleEndian.encode() in data[:_META_SCAN_BYTES]


def identify(data: bytes) -> tuple[str, str]:
    """Best-effort (SOPClassUID, SOPInstanceUID) of a refused object, for failure reports; '' if unknown (and for
    a Deflated data set, which may be refused for what it unpacks to)."""
    if _declares_deflate(data):
        return "", ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
            values = (str(dataset.get("SOPClassUID", "")).strip(), str(dataset.get("SOPInstanceUID", "")).strip())
        except Exception:
            return "", ""
    return tuple(value if is_valid_uid(value) else "" for value in values)  # type: ignore[return-value]
