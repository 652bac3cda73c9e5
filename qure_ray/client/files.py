"""Finding the DICOM files to upload in files, folders (recursively) and zip archives.

A file named directly is sent as it is, so the platform's refusal says exactly what is wrong with it; in
a folder or a zip only DICOM Part 10 files ('DICM' at byte 128) are taken, and the others are reported as
skipped. Zip members are read locally, when their batch is sent.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from qure_ray.client.errors import InputError
from qure_ray.client.models import SkippedFile

PREAMBLE_BYTES = 128
MAGIC = b"DICM"
T = TypeVar("T")
NOT_PART10 = "not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)"


@dataclass(frozen=True)
class DicomFile:
    """One instance to upload: a file on disk, or a member of a zip archive."""

    file: Path
    size_bytes: int
    member: str | None = None

    @property
    def path(self) -> str:
        """How reports name it: the file, or `archive.zip!member`."""
        return f"{self.file}!{self.member}" if self.member else str(self.file)

    @property
    def name(self) -> str:
        return PurePosixPath(self.member).name if self.member else self.file.name

    def read(self) -> bytes:
        try:
            if self.member is None:
                return self.file.read_bytes()
            with zipfile.ZipFile(self.file) as archive:
                return archive.read(self.member)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise InputError(f"{self.path} cannot be read any more: {exc}") from exc


def is_part10(head: bytes) -> bool:
    return head[PREAMBLE_BYTES : PREAMBLE_BYTES + len(MAGIC)] == MAGIC


def find_dicom(paths: Iterable[str | Path]) -> tuple[list[DicomFile], list[SkippedFile]]:
    """The DICOM files under `paths`, in a stable order, and what was skipped. Raises `InputError` for a
    path that does not exist or a zip that cannot be read."""
    found: dict[tuple[Path, str | None], DicomFile] = {}
    skipped: list[SkippedFile] = []
    for item in _expand(paths):
        if isinstance(item, SkippedFile):
            skipped.append(item)
        else:
            found.setdefault((item.file.resolve(), item.member), item)
    return list(found.values()), skipped


def _expand(paths: Iterable[str | Path]) -> Iterator[DicomFile | SkippedFile]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _zip(file) if _is_zip(file) else _checked(file)
        elif path.is_file():
            yield from _zip(path) if _is_zip(path) else [DicomFile(path, path.stat().st_size)]
        else:
            raise InputError(f"{path} does not exist; name DICOM files, folders of them, or .zip archives")


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip" and zipfile.is_zipfile(path)


def _checked(file: Path) -> Iterator[DicomFile | SkippedFile]:
    try:
        with file.open("rb") as handle:
            head = handle.read(PREAMBLE_BYTES + len(MAGIC))
    except OSError as exc:
        yield SkippedFile(str(file), f"cannot be read: {exc.strerror}")
        return
    yield DicomFile(file, file.stat().st_size) if is_part10(head) else SkippedFile(str(file), NOT_PART10)


def _zip(file: Path) -> Iterator[DicomFile | SkippedFile]:
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if info.is_dir() or info.filename.startswith("__MACOSX/"):
                    continue
                with archive.open(info) as member:
                    head = member.read(PREAMBLE_BYTES + len(MAGIC))
                if is_part10(head):
                    yield DicomFile(file, info.file_size, info.filename)
                else:
                    yield SkippedFile(f"{file}!{info.filename}", NOT_PART10)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{file} is not a readable zip archive: {exc}") from exc


def batches(items: Sequence[T], size_bytes: Callable[[T], int], *, max_items: int, max_bytes: int) -> Iterator[list[T]]:
    """`items` in order, grouped so that no group has more than `max_items` or (unless it is one item alone)
    more than `max_bytes`."""
    group: list[T] = []
    group_bytes = 0
    for item in items:
        size = size_bytes(item)
        if group and (len(group) >= max_items or group_bytes + size > max_bytes):
            yield group
            group, group_bytes = [], 0
        group.append(item)
        group_bytes += size
    if group:
        yield group
