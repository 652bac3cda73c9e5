"""The image size a compressed frame declares in its own header: JPEG's SOF (JPEG-LS's SOF55 too) and JPEG 2000's
SIZ marker. Codecs size their buffers from it, not from Rows and Columns: a kilobyte of JPEG 2000 whose header
claims 30000 x 30000 took 1.9 GB to refuse. Ingest compares every frame's with Rows and Columns before decoding
any (the pipeline and WADO-RS decode frames past the first)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from pydicom.encaps import generate_fragmented_frames, parse_fragments

from qure_ray.dicom.standards import JPEG2000_FAMILY, JPEG_FAMILY

_SOF_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7})
"""Start-of-frame markers: the JPEG processes (not DHT C4, JPG C8, DAC CC) and JPEG-LS's SOF55 (F7)."""
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
"""Markers without a length: TEM, RSTn, SOI."""
_J2K_SIZ = b"\xff\x4f\xff\x51"
"""SOC then SIZ: a JPEG 2000 codestream's first markers (inside a JP2 box when the encoder wrapped it)."""
_HEADER_SCAN = 64 * 1024


def declared_sizes(pixel_data: bytes, transfer_syntax: str, frames: int) -> Iterator[tuple[int, tuple[int, int]]]:
    """(frame number from 1, (rows, columns) its codestream declares) for each frame whose header is found; none
    where this transfer syntax has no such header (RLE: decoded to Rows x Columns) or the items are malformed,
    leaving the decoder to judge. A frame at a time: fragments are read, never all frames' at once."""
    if transfer_syntax not in JPEG_FAMILY | JPEG2000_FAMILY:
        return
    try:
        for number, fragments in enumerate(generate_fragmented_frames(pixel_data, number_of_frames=frames), 1):
            head = fragments[0] if len(fragments) == 1 else b"".join(fragments)  # a header split across fragments
            declared = frame_declared_size(head, transfer_syntax)
            if declared is not None:
                yield number, declared
    except Exception:  # struct.error, ValueError, ...: a malformed item is the decoder's to refuse, as a 4xx
        return


def frame_declared_size(codestream: bytes, transfer_syntax: str) -> tuple[int, int] | None:
    """(rows, columns) that one frame's codestream (or its start) declares; None where not found. JPEG's markers
    are walked segment by segment to the start of frame, however far (an APP segment may be 64 KB); JPEG 2000's
    SIZ follows its SOC at the start of the codestream (in a JP2 box header at most)."""
    if transfer_syntax in JPEG2000_FAMILY:
        return _jpeg2000(codestream[:_HEADER_SCAN])
    return _jpeg(codestream) if transfer_syntax in JPEG_FAMILY else None


def _jpeg2000(data: bytes) -> tuple[int, int] | None:
    at = data.find(_J2K_SIZ)
    if at < 0 or len(data) < at + 24:
        return None
    # after SOC and SIZ: Lsiz, Rsiz (2 bytes each), then Xsiz, Ysiz, XOsiz, YOsiz (4 bytes each)
    width, height, x_offset, y_offset = struct.unpack(">IIII", data[at + 8 : at + 24])
    return height - y_offset, width - x_offset


def _jpeg(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
        elif marker in _STANDALONE:
            at += 2
        elif marker in _SOF_MARKERS:  # length (2), sample precision (1), lines (2), samples per line (2)
            if at + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return (height, width) if height else None  # 0 lines: given later by a DNL marker
        else:
            at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    return None


_ITEM_TAG = b"\xfe\xff\x00\xe0"


def fragment_count(pixel_data: bytes) -> int | None:
    """How many fragments encapsulated pixel data holds after its Basic Offset Table: each frame takes at least
    one, so fewer than NumberOfFrames cannot be that many frames. None when the items are malformed (the decoder
    is left to refuse them)."""
    if pixel_data[:4] != _ITEM_TAG or len(pixel_data) < 8:
        return None
    (offsets_length,) = struct.unpack("<I", pixel_data[4:8])
    try:
        count, _ = parse_fragments(pixel_data[8 + offsets_length :])
    except Exception:  # ValueError and others on a malformed item
        return None
    return count
