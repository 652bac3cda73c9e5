"""Finding DICOM in files, folders and zips, and batching what is found."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from qure_ray.client import InputError
from qure_ray.client.files import DicomFile, batches, find_dicom
from qure_ray.dicom.synthetic import chest_dx


def test_folders_are_searched_recursively_and_non_dicom_is_skipped(tmp_path: Path) -> None:
    image = chest_dx(seed=0, size=32)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.dcm").write_bytes(image)
    (tmp_path / "a" / "b" / "IM0001").write_bytes(image)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0" * 10)
    (tmp_path / "a" / "b" / "DICOMDIR.txt").write_text("x" * 200)
    with zipfile.ZipFile(tmp_path / "a" / "c.zip", "w") as archive:
        archive.writestr("dir/", "")
        archive.writestr("dir/two.dcm", image)
        archive.writestr("__MACOSX/dir/._two.dcm", b"junk")
        archive.writestr("notes.txt", "no")

    found, skipped = find_dicom([tmp_path / "a", tmp_path / "a" / "one.dcm"])  # one.dcm twice: found once

    assert [f.path for f in found] == [
        str(tmp_path / "a" / "b" / "IM0001"), f"{tmp_path / 'a' / 'c.zip'}!dir/two.dcm", str(tmp_path / "a" / "one.dcm")
    ]  # fmt: skip
    assert found[1].name == "two.dcm" and found[1].read() == image and found[1].size_bytes == len(image)
    assert sorted(Path(s.path).name for s in skipped) == [".DS_Store", "DICOMDIR.txt", "c.zip!notes.txt"]
    assert all("DICM" in s.reason for s in skipped)


def test_a_file_named_directly_is_sent_as_it_is(tmp_path: Path) -> None:
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"not dicom")
    found, skipped = find_dicom([odd])
    assert [f.path for f in found] == [str(odd)] and skipped == []


def test_missing_paths_and_broken_zips_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        find_dicom([tmp_path / "nope"])
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("a.dcm", chest_dx(seed=1, size=32))
    broken.write_bytes(broken.read_bytes()[:-30])  # central directory cut: not a zip any more
    found, _ = find_dicom([broken])
    assert [f.path for f in found] == [str(broken)]  # no longer a zip: sent as a file, the platform refuses it


def test_batches_respect_count_and_bytes_and_keep_order() -> None:
    sizes = [5, 5, 5, 20, 1, 1]
    groups = list(batches(sizes, lambda n: n, max_items=3, max_bytes=12))
    assert groups == [[5, 5], [5], [20], [1, 1]]
    assert list(batches([], lambda n: n, max_items=3, max_bytes=12)) == []
    assert DicomFile(Path("x.dcm"), 1).path == "x.dcm"
