"""WADO-RS rendered frames without HTTP: what the query and Accept ask for, and the picture made."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from qure_ray.dicom import rendered
from qure_ray.dicom.frames import StoredObject
from qure_ray.dicom.pixels import Windowing, displayed
from qure_ray.dicom.rendered import Rendering
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import BadRequestError, NotFoundError


def test_a_rendering_is_jpeg_by_default_and_takes_window_viewport_quality_and_accept() -> None:
    assert Rendering.asked("", {}) == Rendering("image/jpeg")
    asked = Rendering.asked("image/png", {"window": "40,80,LINEAR-EXACT", "viewport": "64,32", "quality": "75"})
    assert asked == Rendering("image/png", Windowing("fixed", 40.0, 80.0), (64, 32), 75)
    assert Rendering.asked("image/gif, image/*;q=0.5", {}).media_type == "image/jpeg"
    assert Rendering.asked("image/gif", {"accept": "image/png", "_": "1700000000"}).media_type == "image/png"
    assert Rendering.asked("image/jpeg;q=0, */*", {}).media_type == "image/png"  # refused by name


def test_a_linear_window_is_ps3_3_s_linear_not_linear_exact() -> None:
    """C.11.2.1.2: LINEAR maps center - 0.5 - (width - 1) / 2 .. center - 0.5 + (width - 1) / 2."""
    assert Rendering.asked("", {"window": "40,80"}).windowing == Windowing("fixed", 39.5, 79.0)
    threshold = Rendering.asked("", {"window": "100,1,linear"}).windowing
    assert threshold.center == 99.5 and threshold.width is not None and threshold.width < 1e-3


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"annotation": "patient"}, "not applied"),
        ({"window": "40,0.5"}, "at least 1"),
        ({"window": "40,0,linear-exact"}, "above 0"),
        ({"window": "40"}, "center,width"),
        ({"window": "40,80,sigmoid"}, "linear"),
        ({"window": "nan,80"}, "center,width"),
        ({"window": "0,1e39"}, "center,width"),
        ({"viewport": "0,10"}, "1 to 8192"),
        ({"viewport": "10,10,0,0,5,5"}, "source region"),
        ({"viewport": "10.5,10"}, "1 to 8192"),
        ({"viewport": "1_0,1e1"}, "1 to 8192"),
        ({"quality": "101"}, "1 to 100"),
        ({"quality": "9e1"}, "1 to 100"),
    ],
)
def test_a_parameter_this_server_cannot_apply_is_400_saying_so(query: dict[str, str], said: str) -> None:
    with pytest.raises(BadRequestError, match=said) as refused:
        Rendering.asked("", query)
    assert refused.value.http_status == 400


def test_a_parameter_given_twice_is_400() -> None:
    with pytest.raises(BadRequestError, match="given twice"):
        Rendering.asked("", {"window": "40,80"}, frozenset({"window"}))


def test_an_accept_of_neither_jpeg_nor_png_is_406() -> None:
    with pytest.raises(BadRequestError, match="image/jpeg or image/png") as refused:
        Rendering.asked("image/gif", {})
    assert refused.value.http_status == 406


def test_a_frame_is_rendered_as_a_reader_sees_it_fitted_to_the_viewport() -> None:
    data = chest_dx(size=64)
    stored = StoredObject.read(data)
    dataset = pydicom.dcmread(io.BytesIO(data))
    png = Rendering("image/png").render(stored, 1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.round(displayed(dataset) * 255).astype(np.uint8))
    windowed = Rendering("image/png", Windowing("fixed", 0.0, 1.0)).render(stored, 1)
    assert windowed != png  # the window asked for, not the data set's
    small = Image.open(io.BytesIO(Rendering("image/jpeg", viewport=(32, 16)).render(stored, 1)))
    assert (small.format, small.size) == ("JPEG", (16, 16))  # fitted, aspect kept
    with pytest.raises(NotFoundError, match="no frame 2"):
        Rendering("image/png").render(stored, 2)


def _saved(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_colour_frame_is_rendered_in_colour() -> None:
    dataset = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    png = Rendering("image/png").render(StoredObject.read(_saved(dataset)), 1)
    shown = np.asarray(Image.open(io.BytesIO(png)))
    assert shown.shape == (*dataset.pixel_array.shape[:2], 3) and np.array_equal(shown, dataset.pixel_array)


def test_a_small_bright_object_on_a_uniform_background_is_not_rendered_black() -> None:
    dataset = pydicom.dcmread(io.BytesIO(chest_dx(size=64)))
    values = np.zeros((64, 64), np.uint16)
    values[30:33, 30:33] = 1000  # 0.2% of the pixels: both percentiles are 0
    dataset.PixelData = values.tobytes()
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in dataset:
            delattr(dataset, keyword)
    shown = np.asarray(Image.open(io.BytesIO(Rendering("image/png").render(StoredObject.read(_saved(dataset)), 1))))
    assert shown.max() == 255 and shown[0, 0] == 0


def test_a_frame_too_large_or_undecodable_to_render_is_406(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = StoredObject.read(chest_dx(size=64))
    monkeypatch.setattr(rendered, "MAX_RENDERED_PIXELS", 64 * 64 - 1)
    with pytest.raises(BadRequestError, match="fetch its /frames") as refused:
        Rendering("image/png").render(stored, 1)
    assert refused.value.http_status == 406
    monkeypatch.undo()
    dataset = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    dataset.PixelData = dataset.PixelData[:200] + bytes(len(dataset.PixelData) - 200)  # a corrupt RLE frame
    with pytest.raises(BadRequestError, match="cannot be decoded") as refused:
        Rendering("image/png").render(StoredObject.read(_saved(dataset)), 1)
    assert refused.value.http_status == 406
