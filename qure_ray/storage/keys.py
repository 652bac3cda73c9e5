"""Object-store key layout (DESIGN.md §3). Every UID is validated before it becomes part of a key."""

from __future__ import annotations

import re

from qure_ray.dicom.uids import is_valid_uid
from qure_ray.errors import StorageError

_SOURCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
CATALOG_PREFIX = "catalog/"


def _check(kind: str, value: str, ok: bool) -> str:
    if not ok or value in (".", ".."):
        raise StorageError(f"refusing to build an object key from {kind} {value[:80]!r}")
    return value


def dicom_key(source: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """`dicom/<source>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`"""
    return f"{dicom_prefix(source, study_uid, series_uid)}{_check('UID', sop_uid, is_valid_uid(sop_uid))}.dcm"


def dicom_key_parts(key: str) -> tuple[str, str, str, str] | None:
    """(source, StudyUID, SeriesUID, SOPUID) of a `dicom_key`; None for any other key."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != "dicom" or not parts[4].endswith(".dcm"):
        return None
    return parts[1], parts[2], parts[3], parts[4].removesuffix(".dcm")


def dicom_prefix(source: str, study_uid: str, series_uid: str | None = None) -> str:
    """`dicom/<source>/<StudyUID>/[<SeriesUID>/]`: where a study's originals, or one series', are."""
    _check("source", source, bool(_SOURCE.match(source)))
    for uid in (study_uid, series_uid or study_uid):
        _check("UID", uid, is_valid_uid(uid))
    return f"dicom/{source}/{study_uid}/" + (f"{series_uid}/" if series_uid else "")


def asset_key(source: str, result_uid: str, name: str) -> str:
    """`assets/<source>/<result uid>/<asset name>`"""
    _check("source", source, bool(_SOURCE.match(source)))
    _check("UID", result_uid, is_valid_uid(result_uid))
    _check("asset name", name, bool(_ASSET_NAME.match(name)))
    return f"assets/{source}/{result_uid}/{name}"


def catalog_key(table: str, segment: str) -> str:
    """`catalog/<table>/<segment>.parquet`"""
    _check("table", table, bool(re.fullmatch(r"[a-z_]+", table)))
    _check("segment", segment, bool(re.fullmatch(r"[A-Za-z0-9_-]+", segment)))
    return f"{CATALOG_PREFIX}{table}/{segment}.parquet"


def segment_key(table: str, named_ns: int, suffix: str = "") -> str:
    """`catalog/<table>/<named_ns, 20 digits>-<suffix>.parquet`: segment keys sort by the time they were named.
    Without a suffix: a key just before every segment named at `named_ns` (a listing's start)."""
    return catalog_key(table, f"{named_ns:020d}-{suffix}" if suffix else f"{named_ns:020d}")


def segment_named_ns(key: str) -> int | None:
    """When a segment's key was named (see `segment_key`); None for a key not named that way."""
    match = re.fullmatch(r"(\d{20})-[^/]+", key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None
