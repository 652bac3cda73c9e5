"""Reconciliation: originals on the store that no catalog row names are removed (at start-up, then hourly).

Ingest stores the object first and records it second; a crash in between leaves an orphan that no client
was told about (it got no 2xx). Orphans younger than `grace_s` are left alone: they may belong to an
upload still in flight on another ingress replica. Listing every original takes a while, so each orphan is
checked again just before it is deleted: an upload that meanwhile replaced it (ingest replaces an orphan
past the grace period) or recorded it (the same content, uploaded again) keeps it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from qure_ray.storage.catalog import Catalog
from qure_ray.storage.keys import dicom_key_parts
from qure_ray.storage.object_store import ObjectInfo, ObjectStore

logger = logging.getLogger(__name__)
DICOM_PREFIX = "dicom/"
DEFAULT_GRACE_S = 600.0


def select_orphans(objects: Iterable[ObjectInfo], known_keys: set[str], *, grace_s: float, now_s: float) -> list[str]:
    """Keys of originals no catalog row names and older than the grace period."""
    cutoff = now_s - grace_s
    return [info.key for info in objects if info.key not in known_keys and info.modified_at < cutoff]


async def remove_orphans(store: ObjectStore, catalog: Catalog, *, grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """Delete the orphans; returns their keys. The store is called in threads, the catalog read on the
    caller's thread (the catalog actor's: the catalog is not thread-safe), after the listing, so rows recorded
    while it ran count."""
    now_s = time.time()
    objects = await asyncio.to_thread(store.list_objects, DICOM_PREFIX)
    removed = []
    for key in select_orphans(objects, catalog.object_keys(), grace_s=grace_s, now_s=now_s):
        written_at = await asyncio.to_thread(modified_at, store, key)
        if written_at is not None and written_at < now_s - grace_s and not _recorded(catalog, key):
            await asyncio.to_thread(store.delete, key)
            removed.append(key)
    if removed:
        logger.warning("removed %d orphaned original(s) with no catalog row", len(removed))
    return removed


def modified_at(store: ObjectStore, key: str) -> float | None:
    """When the object at `key` was last written (seconds since the epoch), or None when there is none."""
    return next((info.modified_at for info in store.list_objects(key) if info.key == key), None)


def _recorded(catalog: Catalog, key: str) -> bool:
    """Whether the catalog now names `key` (`dicom/<source>/<study>/<series>/<sop>.dcm`): a row recorded since
    `object_keys()` is its instance's newest."""
    parts = dicom_key_parts(key)
    record = catalog.instance(parts[0], parts[3]) if parts is not None else None
    return record is not None and record.object_key == key
