"""WADO-RS rendered frames without HTTP: what the query and Accept ask for, and the picture made."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from qure_ray.dicom.frames import StoredObject
from qure_ray.dicom.pixels import Windowing, displayed
from qure_ray.dicom.rendered import Rendering
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import BadRequestError, NotFoundError


def test_a_rendering_is_jpeg_by_default_and_takes_window_viewport_and_quality() -> None:
    assert Rendering.asked("", {}) == Rendering("image/jpeg")
    asked = Rendering.asked("image/png", {"window": "40,80,LINEAR", "viewport": "64,32", "quality": "75"})
    assert asked == Rendering("image/png", Windowing("fixed", 40.0, 80.0), (64, 32), 75)
    assert Rendering.asked("image/gif, image/*;q=0.5", {}).media_type == "image/jpeg"


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"annotation": "patient"}, "not supported"),
        ({"window": "40,0"}, "width above 0"),
        ({"window": "40"}, "center,width"),
        ({"window": "40,80,sigmoid"}, "linear"),
        ({"window": "nan,80"}, "center,width"),
        ({"viewport": "0,10"}, "1 to 8192"),
        ({"viewport": "10,10,0,0,5,5"}, "source region"),
        ({"viewport": "10.5,10"}, "1 to 8192"),
        ({"quality": "101"}, "1 to 100"),
    ],
)
def test_a_parameter_this_server_cannot_apply_is_400_saying_so(query: dict[str, str], said: str) -> None:
    with pytest.raises(BadRequestError, match=said) as refused:
        Rendering.asked("", query)
    assert refused.value.http_status == 400


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
