from __future__ import annotations

import io
import zipfile

import pytest

from qure_ray.dicom.archive import zip_members
from qure_ray.dicom.multipart import MultipartLimits
from qure_ray.errors import BadRequestError

LIMITS = MultipartLimits(max_part_bytes=1000, max_request_bytes=10_000, max_parts=3)


def make_zip(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_members_in_order_skipping_folders_and_resource_forks() -> None:
    archive = make_zip({"a/1.dcm": b"one", "__MACOSX/a/._1.dcm": b"junk", "2.dcm": b"x" * 1001})
    assert [(m.name, m.data) for m in zip_members(archive, LIMITS)] == [("a/1.dcm", b"one"), ("2.dcm", None)]


def test_bombs_too_many_members_and_garbage_are_refused() -> None:
    with pytest.raises(BadRequestError) as info:
        list(zip_members(make_zip({f"{i}.dcm": b"." for i in range(4)}), LIMITS))
    assert info.value.http_status == 413
    bomb = make_zip({f"{i}.dcm": b"\0" * 900 for i in range(3)})
    assert all(m.data is not None for m in zip_members(bomb, LIMITS))
    big = MultipartLimits(max_part_bytes=10**9, max_request_bytes=10_000, max_parts=3)
    with pytest.raises(BadRequestError, match="unpacks"):
        list(zip_members(make_zip({"z.dcm": b"\0" * 20_000}), big))
    with pytest.raises(BadRequestError, match="not a readable zip"):
        list(zip_members(io.BytesIO(b"PK not really"), LIMITS))
