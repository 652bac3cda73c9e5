"""Zip uploads: the members of an `application/zip` body, checked against the limits before reading.

Sizes are taken from the zip's central directory and enforced again while reading (a lying header or a
zip bomb stops at the limit). Directories and macOS resource forks are skipped.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from qure_ray.dicom.multipart import MultipartLimits
from qure_ray.errors import BadRequestError

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes | None
    """None when the member is over the per-instance limit."""


def zip_members(file: IO[bytes], limits: MultipartLimits) -> Iterator[Member]:
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise BadRequestError(f"the application/zip body is not a readable zip archive: {exc}") from exc
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir() and not info.filename.startswith("__MACOSX/")]
        if len(infos) > limits.max_parts:
            raise BadRequestError(f"the zip holds {len(infos)} files; the limit is {limits.max_parts}", http_status=413)
        if sum(info.file_size for info in infos) > limits.max_request_bytes:
            raise BadRequestError(f"the zip unpacks to more than {limits.max_request_bytes} bytes", http_status=413)
        for info in infos:
            yield Member(info.filename, _read_bounded(archive, info, limits.max_part_bytes))


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes | None:
    if info.file_size > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BadRequestError(f"zip member {info.filename!r} cannot be read: {exc}") from exc
    return b"".join(chunks)
