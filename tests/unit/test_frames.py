"""WADO-RS frames and metadata without HTTP: which rendition an Accept header gets, frame lists, frames decoded
as the data set describes them, a frame bomb refused, bulk data named and not inlined."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from qure_ray.dicom.codestream import declared_sizes, frame_declared_size
from qure_ray.dicom.frames import FrameRendition, StoredObject, frame_numbers, frame_rendition
from qure_ray.dicom.instance import read_instance
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import BadRequestError, InvalidInstanceError

RELATED = "multipart/related; type="
RLE_AS_STORED = FrameRendition("image/dicom-rle", RLELossless)
OCTETS = FrameRendition("application/octet-stream", ExplicitVRLittleEndian)
DECODED = FrameRendition("application/octet-stream", ExplicitVRLittleEndian, decoded=True)


@pytest.mark.parametrize(
    ("accept", "stored", "expected"),
    [
        ("", RLELossless, RLE_AS_STORED),
        ("*/*", RLELossless, RLE_AS_STORED),
        (f'{RELATED}"*/*"', RLELossless, RLE_AS_STORED),  # dicomweb-client's default
        (f'{RELATED}"image/dicom-rle"', RLELossless, RLE_AS_STORED),
        (f'{RELATED}"image/x-dicom-rle"', RLELossless, RLE_AS_STORED),
        (f'{RELATED}"image/*"; transfer-syntax={RLELossless}', RLELossless, RLE_AS_STORED),
        (f'{RELATED}"application/octet-stream"', RLELossless, DECODED),
        (f'{RELATED}"*/*"; transfer-syntax={ExplicitVRLittleEndian}', RLELossless, DECODED),
        (f'{RELATED}"application/octet-stream"; transfer-syntax=*', RLELossless,
         FrameRendition("application/octet-stream", RLELossless)),
        (f'{RELATED}"image/jls", {RELATED}"application/octet-stream"', RLELossless, DECODED),  # the first it can
        (f'{RELATED}"application/octet-stream"; q=0, {RELATED}"image/*"', RLELossless, RLE_AS_STORED),
        (f'{RELATED}"application/octet-stream"; q=0.1, {RELATED}"image/dicom-rle"; q=0.9', RLELossless,
         RLE_AS_STORED),  # by q before order
        (f'{RELATED}"image/dicom-rle"; q=0, */*', RLELossless, DECODED),  # refused by name, not admitted by */*
        (f'{RELATED}"application/octet-stream"', ExplicitVRLittleEndian, OCTETS),
        (f'{RELATED}"application/octet-stream"; transfer-syntax=*', ExplicitVRLittleEndian, OCTETS),
        ("", ExplicitVRBigEndian, OCTETS),  # big endian goes out little endian
    ],
)  # fmt: skip
def test_frames_go_out_as_the_rendition_accept_prefers(accept: str, stored: str, expected: FrameRendition) -> None:
    assert frame_rendition(accept, stored) == expected


@pytest.mark.parametrize(
    ("accept", "stored"),
    [
        (f'{RELATED}"image/jls"', RLELossless),
        (f'{RELATED}"image/jpeg"', ExplicitVRLittleEndian),
        (f'{RELATED}"image/*"', ExplicitVRLittleEndian),
        (f'{RELATED}"application/octet-stream"; transfer-syntax={JPEGBaseline8Bit}', RLELossless),
        (f'{RELATED}"application/octet-stream"; transfer-syntax={ExplicitVRBigEndian}', ExplicitVRBigEndian),
        ("application/dicom", RLELossless),
        (f'{RELATED}"application/octet-stream"; q=0, */*', ExplicitVRLittleEndian),
    ],
)
def test_an_accept_that_admits_no_rendition_is_406_naming_what_could_be_sent(accept: str, stored: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        frame_rendition(accept, stored)
    assert refused.value.http_status == 406 and "application/octet-stream" in str(refused.value)


@pytest.mark.parametrize("frame_list", ["0", "1,x", "²", "9" * 5000, "1,,2", "-1", "2,1,2"])
def test_a_frame_list_is_distinct_whole_numbers_from_1(frame_list: str) -> None:
    with pytest.raises(BadRequestError):
        frame_numbers(frame_list)


def _bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_colour_jpeg_frame_is_sent_as_stored_or_decoded_to_rgb() -> None:
    data = open(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"), "rb").read()
    stored = StoredObject.read(data)
    (codestream,) = stored.pixel_frames([1], frame_rendition("", JPEGBaseline8Bit))
    assert codestream[:2] == b"\xff\xd8" and codestream.rstrip(b"\0")[-2:] == b"\xff\xd9"  # a whole JPEG codestream
    (decoded,) = stored.pixel_frames([1], DECODED)
    rgb = np.frombuffer(decoded, np.uint8).reshape(stored.dataset.Rows, stored.dataset.Columns, 3)
    assert np.array_equal(rgb, pydicom.dcmread(io.BytesIO(data)).pixel_array)  # PS3.5 8.2.1: RGB once decompressed


def test_an_rle_frame_decodes_to_the_colour_space_its_data_set_names() -> None:
    """RLE has no colour transform: a YBR_FULL frame decoded is YBR_FULL, as the metadata says, not RGB."""
    dataset = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    dataset.decompress()
    ybr = convert_color_space(dataset.pixel_array, "RGB", "YBR_FULL")
    dataset.PhotometricInterpretation = "YBR_FULL"
    dataset.PixelData = ybr.tobytes()
    dataset.compress(RLELossless)
    (decoded,) = StoredObject.read(_bytes(dataset)).pixel_frames([1], DECODED)
    assert decoded == ybr.tobytes()


def _jpeg2000_bomb() -> bytes:
    """Two JPEG 2000 frames of a real 64 x 64 image; frame 2's codestream declares 16000 x 16000 (2 GB decoded)."""
    dataset = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    first = next(generate_frames(dataset.PixelData, number_of_frames=1))
    at = first.find(b"\xff\x4f\xff\x51")  # SOC, SIZ; then Lsiz, Rsiz, Xsiz, Ysiz
    second = first[: at + 8] + struct.pack(">II", 16000, 16000) + first[at + 16 :]
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    dataset.NumberOfFrames = 2
    dataset.PixelData = encapsulate([first, second])
    return _bytes(dataset)


def test_a_frame_whose_codestream_claims_another_size_is_refused_at_ingest_and_never_decoded() -> None:
    data = _jpeg2000_bomb()
    with pytest.raises(InvalidInstanceError, match="frame 2's codestream declares 16000 x 16000"):
        read_instance(data)
    stored = StoredObject.read(data)  # one stored before ingest checked past frame 1
    (as_stored,) = stored.pixel_frames([2], frame_rendition("", JPEG2000Lossless))
    assert b"\xff\x4f\xff\x51" in as_stored
    with pytest.raises(BadRequestError, match="frame 2's codestream declares 16000 x 16000") as refused:
        stored.pixel_frames([2], DECODED)
    assert refused.value.http_status == 406


def test_metadata_names_bulk_data_and_keeps_what_follows_pixel_data() -> None:
    dataset = pydicom.dcmread(io.BytesIO(chest_dx(size=32)))
    blob = bytes(range(256)) * 40  # 10 KB of private binary data
    dataset.private_block(0x0009, "QURE TEST", create=True).add_new(0x10, "OB", blob)
    dataset.private_block(0x7FE1, "QURE TEST", create=True).add_new(0x10, "LO", "after the pixels")
    stored = StoredObject.read(_bytes(dataset))
    document = stored.metadata("http://x/bulkdata")
    assert document["00091010"] == {"vr": "OB", "BulkDataURI": "http://x/bulkdata/00091010"}
    assert document["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://x/bulkdata/7FE00010"}
    assert document["7FE11010"]["Value"] == ["after the pixels"]
    assert stored.value_bytes(0x00091010) == blob
    assert list(document) == sorted(document)  # in tag order


def _j2k_header(rows: int, columns: int) -> bytes:
    """SOC, then a SIZ segment declaring `rows` x `columns` (what the size check reads)."""
    return b"\xff\x4f\xff\x51" + struct.pack(">HH", 41, 0) + struct.pack(">IIII", columns, rows, 0, 0) + bytes(40)


def test_a_declared_size_is_found_where_a_frame_splits_or_delays_its_header() -> None:
    good, bomb = _j2k_header(64, 64), _j2k_header(16000, 16000)
    offsets = struct.pack("<II", 0, 8 + len(good))  # frame 2 is two fragments, the first holding only SOC
    items = b"".join(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(f)) + f for f in (good, bomb[:2], bomb[2:]))
    split = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(offsets)) + offsets + items
    assert list(declared_sizes(split, JPEG2000Lossless, 2)) == [(1, (64, 64)), (2, (16000, 16000))]
    start_of_frame = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 16000, 16000, 1) + b"\x01\x11\x00"
    late = b"\xff\xd8" + b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533) + start_of_frame + b"\xff\xd9"
    assert frame_declared_size(late, JPEGBaseline8Bit) == (16000, 16000)  # past a 64 KB APP1 segment


def test_metadata_of_an_implicit_vr_object_takes_each_vr_from_the_dictionary_or_un() -> None:
    dataset = pydicom.dcmread(io.BytesIO(chest_dx(size=32)))
    dataset.add_new(0x00180FF0, "OB", b"\x01" * 2000)  # a public tag pydicom's dictionary does not know
    dataset.add_new(0x00281201, "OW", b"\x01\x02" * 2048)  # Red Palette Color LUT Data
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True, implicit_vr=True, little_endian=True)
    document = StoredObject.read(buffer.getvalue()).metadata("http://x/bulkdata")
    assert (document["00180FF0"]["vr"], document["00281201"]["vr"]) == ("UN", "OW")
