from __future__ import annotations

import io
import warnings

import pydicom
import pytest

from qure_ray.dicom import Rules, read_instance
from qure_ray.dicom.synthetic import chest_dx, to_bytes
from qure_ray.errors import InvalidInstanceError


def edit(data: bytes, **changes: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return to_bytes(ds)


def refusal(data: bytes, **kwargs: int) -> InvalidInstanceError:
    with pytest.raises(InvalidInstanceError) as info:
        read_instance(data, **kwargs)
    return info.value


def test_valid_chest_dx_gives_complete_metadata_without_phi() -> None:
    parsed = read_instance(chest_dx(seed=0, size=64))
    m = parsed.metadata
    assert (m.modality, m.body_part, m.view_position, m.rows, m.columns) == ("DX", "CHEST", "PA", 64, 64)
    assert m.transfer_syntax == "1.2.840.10008.1.2.1" and len(m.sha256) == 64
    reply = m.to_reply()
    assert "Phantom" not in str(reply) and "PHANTOM-0001" not in str(reply)
    assert reply["SOPInstanceUID"] == m.sop_uid


@pytest.mark.parametrize(
    ("data", "rule", "mentioned"),
    [
        (b"", Rules.NOT_DICOM, "DICM"),
        (b"\x00" * 128 + b"DICM" + b"\x02\x00garbage", Rules.MISSING_UID, "StudyInstanceUID"),
        (edit(chest_dx(size=32), StudyInstanceUID=None), Rules.MISSING_UID, "(0020,000D) StudyInstanceUID"),
        (edit(chest_dx(size=32), SeriesInstanceUID="1.2.03"), Rules.MALFORMED_UID, "'1.2.03'"),
        (edit(chest_dx(size=32), SOPInstanceUID="1." + "1" * 70), Rules.MALFORMED_UID, "SOPInstanceUID"),
        (edit(chest_dx(size=32), SeriesInstanceUID="1.2.9", SOPInstanceUID="1.2.9"), Rules.UID_REUSED, "'1.2.9'"),
        (edit(chest_dx(size=32), PixelData=None), Rules.NO_PIXEL_DATA, "Pixel Data"),
        (edit(chest_dx(size=32), PixelData=b"\x00" * 100), Rules.PIXEL_DATA_SHORT, "needs 2048 bytes"),
        (edit(chest_dx(size=32), Rows=0), Rules.MISSING_IMAGE_ATTRIBUTE, "Rows=0"),
    ],
)
def test_each_rule_names_the_tag_the_value_and_the_expectation(data: bytes, rule: Rules, mentioned: str) -> None:
    error = refusal(data)
    assert error.code == rule.value.code
    assert mentioned in str(error)
    assert "expected" in str(error)
    assert error.http_status == 400


def test_sop_uid_must_match_the_file_meta() -> None:
    ds = pydicom.dcmread(io.BytesIO(chest_dx(size=32)))
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)  # keep the inconsistent meta as it is
    assert refusal(buffer.getvalue()).code == Rules.SOP_MISMATCH.value.code


def test_size_limit_is_413() -> None:
    error = refusal(chest_dx(size=64), max_bytes=1000)
    assert error.code == Rules.TOO_LARGE.value.code and error.http_status == 413 and "1000" in str(error)


def test_truncated_file_is_refused_not_crashing() -> None:
    data = chest_dx(size=64)
    error = refusal(data[: len(data) // 2])
    assert error.code in {Rules.UNREADABLE.value.code, Rules.PIXEL_DATA_SHORT.value.code}


def test_every_rule_code_is_unique() -> None:
    codes = [rule.value.code for rule in Rules]
    assert len(codes) == len(set(codes))


def _with_vr(data: bytes, tag: bytes, vr: bytes, new_vr: bytes) -> bytes:
    """The file with one element's explicit VR replaced (found by its tag and VR bytes)."""
    at = data.index(tag + vr)
    return data[: at + 4] + new_vr + data[at + 6 :]


def test_an_element_pydicom_cannot_convert_is_refused_as_unreadable() -> None:
    data = chest_dx(seed=0, size=64)
    for broken in (
        _with_vr(data, b"\x08\x00\x60\x00", b"CS", b"XX"),  # Modality: read by the metadata
        _with_vr(data, b"\x28\x00\x10\x00", b"US", b"XX"),  # Rows: read by the pixel checks
        _with_vr(data, b"\x08\x00\x20\x00", b"DA", b"XX"),  # StudyDate: read by no check, only by the outputs
    ):
        error = refusal(broken)
        assert error.code == "unreadable" and "parsing failed" in str(error)


def test_a_deflated_data_set_that_unpacks_past_the_limit_is_413_before_it_unpacks() -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=0, size=1024)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.PixelData = bytes(len(ds.PixelData))  # zeros: 2 MB that deflate to a few KB
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    assert len(data) < 100_000
    assert read_instance(data, max_bytes=3_000_000).metadata.rows == 1024
    error = refusal(data, max_bytes=1_000_000)
    assert error.code == "too-large" and error.http_status == 413 and "Deflated" in str(error)


def test_a_compressed_frame_too_large_to_decode_is_413_before_decoding() -> None:
    import numpy as np
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=0, size=32)))
    ds.compress(RLELossless, np.zeros((32, 32), dtype=np.uint16), encoding_plugin="pydicom")
    ds.Rows = ds.Columns = 20_000  # 800 MB once decoded, as a few bytes of RLE can claim
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    error = refusal(buffer.getvalue())
    assert error.code == "too-large" and "20000" in str(error)


def test_float_pixel_data_with_nan_is_unreadable_not_scored() -> None:
    """NaN windows to NaN, which no threshold exceeds: the image would be reported routine."""
    import numpy as np

    from qure_ray.dicom.pixels import decode_grayscale
    from qure_ray.errors import InvalidInstanceError

    ds = pydicom.dcmread(io.BytesIO(chest_dx(size=32)))
    del ds.PixelData
    values = np.ones((32, 32), np.float32)
    values[3, 4] = np.nan
    ds.FloatPixelData = values.tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    del ds.PixelRepresentation
    with pytest.raises(InvalidInstanceError, match="NaN"):
        decode_grayscale(ds)
    values[3, 4] = 0.5
    ds.FloatPixelData = values.tobytes()
    assert decode_grayscale(ds).shape == (32, 32)


def test_a_rescale_of_nan_is_unreadable_not_scored() -> None:
    from qure_ray.dicom.pixels import decode_grayscale

    ds = pydicom.dcmread(io.BytesIO(chest_dx(size=32)))
    ds.RescaleSlope, ds.RescaleIntercept = "NaN", "0"
    with pytest.raises(InvalidInstanceError, match="NaN or infinite"):
        decode_grayscale(ds)


@pytest.mark.parametrize(
    ("slope", "intercept"),
    [("1", "0"), ("2", "-1024"), ("-1", "4095"), ("NaN", "0"), ("1", "inf"), ("1e38", "0"), ("-1e38", "0")],
)
def test_ingest_refuses_exactly_the_rescales_the_pipeline_cannot_read(slope: str, intercept: str) -> None:
    """Ingest checks the extremes of the stored values, not a float32 copy of the frame: the two must agree.
    1e38 x 4095 overflows float32 to infinity."""
    from qure_ray.dicom.pixels import decode_grayscale

    data = edit(chest_dx(seed=3, size=32), RescaleSlope=slope, RescaleIntercept=intercept)
    try:
        decode_grayscale(pydicom.dcmread(io.BytesIO(data)))
    except InvalidInstanceError:
        assert refusal(data).code == "pixel-data-undecodable"
        assert slope in ("NaN", "1e38", "-1e38") or intercept == "inf"
    else:
        assert read_instance(data).metadata.rows == 32
        assert (slope, intercept) in (("1", "0"), ("2", "-1024"), ("-1", "4095"))


@pytest.mark.parametrize(
    "changes",
    [
        {"BitsAllocated": 12},
        {"BitsStored": 20},  # over BitsAllocated
        {"PixelRepresentation": None},
        {"PhotometricInterpretation": "PALETTE COLOR"},  # without its lookup table
        {"RescaleSlope": [1, 2]},  # VM 1
    ],
)
def test_uncompressed_pixel_data_the_pipeline_could_not_read_is_refused_at_ingest(changes: dict[str, object]) -> None:
    """Accepted, it would have become a `failed` or `unreadable` result later, saying less about why."""
    error = refusal(edit(chest_dx(seed=1, size=32), **changes))
    assert error.code == "pixel-data-undecodable" and error.http_status < 500


def test_uncompressed_ybr_full_422_is_accepted() -> None:
    """Two values per pixel, not three: it was refused as short."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_ybr_full_422_uncompressed.dcm")
    assert path is not None
    with open(path, "rb") as file:
        assert read_instance(file.read()).metadata.rows > 0


def test_a_deflated_object_refused_or_without_preamble_is_never_inflated_whole() -> None:
    """identify() (for the refusal's report) and the no-preamble check used to inflate it all, whatever its size."""
    import tracemalloc

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from qure_ray.dicom.instance import identify

    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=0, size=2048)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.PixelData = bytes(len(ds.PixelData))  # 8 MB of zeros: a few KB deflated
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    tracemalloc.start()
    try:
        assert refusal(data, max_bytes=1_000_000).code == "too-large"
        assert identify(data) == ("", "")
        assert refusal(data[132:], max_bytes=1_000_000).code == "no-preamble"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000  # never the 8 MB it unpacks to


def test_a_window_of_nan_falls_back_to_percentiles_and_a_nan_image_is_blank() -> None:
    import numpy as np

    from qure_ray.dicom.pixels import displayed
    from qure_ray.routing.quality import blank_reason

    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=2, size=32)))
    ds.WindowCenter, ds.WindowWidth = "NaN", "inf"
    assert np.isfinite(displayed(ds)).all()
    assert blank_reason(np.full((4, 4), np.nan, np.float32)) is not None


@pytest.mark.parametrize(("name", "header", "size_at"), [("JPEG2000.dcm", b"\xff\x4f\xff\x51", 8),
                                                          ("SC_rgb_jpeg_dcmtk.dcm", b"\xff\xc0", 5)])  # fmt: skip
def test_a_codestream_declaring_another_size_than_rows_and_columns_is_refused_before_decoding(
    name: str, header: bytes, size_at: int
) -> None:
    """Codecs allocate what the codestream declares: a JPEG 2000 header claiming 30000 x 30000 took 1.9 GB."""
    import struct

    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as file:
        data = bytearray(file.read())
    assert read_instance(bytes(data)).metadata.rows > 0  # as it is: accepted
    at = data.index(header, data.index(b"\xff\x4f" if header.endswith(b"\x51") else b"\xff\xd8\xff")) + size_at
    if header.endswith(b"\x51"):  # JPEG 2000 SIZ: Xsiz, Ysiz (4 bytes each)
        data[at : at + 8] = struct.pack(">II", 30_000, 30_000)
    else:  # JPEG SOF: lines, samples per line (2 bytes each)
        data[at : at + 4] = struct.pack(">HH", 30_000, 30_000)
    error = refusal(bytes(data))
    assert error.code == "pixel-data-undecodable" and "declares 30000 x 30000" in str(error)


def test_encapsulated_pixel_data_cut_short_is_refused_as_a_4xx() -> None:
    """An item whose header is cut short (tag, then half its length): the frame reader's error must not be a
    500. (A whole item header with nothing after it reads as an empty fragment and raises nothing.)"""
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(io.BytesIO(chest_dx(seed=3, size=32)))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\x00\xe0\x04\x00"
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert refusal(buffer.getvalue()).http_status < 500


def test_compressed_pixel_data_declaring_more_frames_than_it_holds_is_refused() -> None:
    """Each frame takes at least one fragment: 2,000,000 declared frames in a few KB would later have the pipeline
    allocate for every one of them."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_rgb_rle_2frame.dcm")
    assert path is not None
    with open(path, "rb") as file:
        data = file.read()
    assert read_instance(data).metadata.rows > 0  # two frames in two fragments: fine
    error = refusal(edit(data, NumberOfFrames=2_000_000))
    assert error.code == "pixel-data-short" and "2 fragment(s)" in str(error) and "2000000" in str(error)
