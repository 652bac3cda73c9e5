"""WADO-RS frames without HTTP: which rendition an Accept header gets, and a colour JPEG frame decoded to native."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from qure_ray.dicom.frames import FrameRendition, frame_bytes, frame_rendition
from qure_ray.errors import BadRequestError

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
        (f'{RELATED}"application/octet-stream"', ExplicitVRLittleEndian, OCTETS),
        (f'{RELATED}"application/octet-stream"; transfer-syntax=*', ExplicitVRLittleEndian, OCTETS),
        ("", "1.2.840.10008.1.2.2", OCTETS),  # big endian goes out little endian
    ],
)  # fmt: skip
def test_frames_go_out_as_the_first_rendition_accept_admits(accept: str, stored: str, expected: FrameRendition) -> None:
    assert frame_rendition(accept, stored) == expected


@pytest.mark.parametrize(
    ("accept", "stored"),
    [
        (f'{RELATED}"image/jls"', RLELossless),
        (f'{RELATED}"image/jpeg"', ExplicitVRLittleEndian),
        (f'{RELATED}"image/*"', ExplicitVRLittleEndian),
        (f'{RELATED}"application/octet-stream"; transfer-syntax={JPEGBaseline8Bit}', RLELossless),
        ("application/dicom", RLELossless),
    ],
)
def test_an_accept_that_admits_no_rendition_is_406_naming_what_could_be_sent(accept: str, stored: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        frame_rendition(accept, stored)
    assert refused.value.http_status == 406 and "application/octet-stream" in str(refused.value)


def test_a_colour_jpeg_frame_is_sent_as_stored_or_decoded_to_rgb() -> None:
    dataset = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))  # YBR_FULL, JPEG baseline
    stored = frame_bytes(dataset, 1, frame_rendition("", JPEGBaseline8Bit))
    assert stored[:2] == b"\xff\xd8" and stored.rstrip(b"\0")[-2:] == b"\xff\xd9"  # a whole JPEG codestream
    decoded = frame_bytes(dataset, 1, DECODED)
    rgb = np.frombuffer(decoded, np.uint8).reshape(dataset.Rows, dataset.Columns, 3)
    assert np.array_equal(rgb, dataset.pixel_array)  # pydicom's RGB, as PS3.5 8.2.1 has a decompressed YBR frame
    assert rgb[..., 0].mean() != rgb[..., 1].mean()  # colour, not luminance
