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


def _corrupt_member_data(archive: io.BytesIO, name: str) -> io.BytesIO:
    """Flip a byte inside `name`'s compressed data (its local header and sizes stay intact)."""
    raw = bytearray(archive.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as reader:
        info = reader.getinfo(name)
    name_and_extra = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little") + int.from_bytes(
        raw[info.header_offset + 28 : info.header_offset + 30], "little"
    )
    raw[info.header_offset + 30 + name_and_extra + 2] ^= 0xFF
    return io.BytesIO(bytes(raw))


def test_unreadable_members_are_refused_one_by_one() -> None:
    noise = bytes(range(256)) * 3
    corrupt = _corrupt_member_data(make_zip({"a.dcm": b"A" * 500, "b.dcm": noise, "c.dcm": b"C"}), "a.dcm")
    encrypted = bytearray(make_zip({"d.dcm": b"D"}).getvalue())
    encrypted[6] |= 0x1  # the local header's general purpose flag: encrypted
    central = encrypted.rindex(b"PK\x01\x02")
    encrypted[central + 8] |= 0x1  # and the central directory's
    members = list(zip_members(corrupt, LIMITS)) + list(zip_members(io.BytesIO(bytes(encrypted)), LIMITS))

    assert [(m.name, m.data is None) for m in members] == [
        ("a.dcm", True),
        ("b.dcm", False),
        ("c.dcm", False),
        ("d.dcm", True),
    ]
    assert members[1].data == noise and members[2].data == b"C"
    refusals = [m.refusal for m in members if m.refusal]
    assert [r.code for r in refusals] == ["unreadable", "unreadable"]
    assert "cannot be unpacked" in refusals[0].message and "encrypted" in refusals[1].message
    assert zip_members(make_zip({"2.dcm": b"x" * 1001}), LIMITS).__next__().refusal.code == "too-large"  # type: ignore[union-attr]


def test_a_zip_listing_too_many_entries_is_refused_before_its_directory_is_read() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(20):
            archive.writestr(f"folder{i}/", b"")  # folders are skipped, but each is an entry to parse
        archive.writestr("1.dcm", b"one")
    buffer.seek(0)
    with pytest.raises(BadRequestError) as info:
        list(zip_members(buffer, LIMITS))
    assert info.value.http_status == 413 and "lists 21 entries; the limit is 12" in str(info.value)
