"""Start-up reconciliation: originals on the store that no catalog row names are removed.

Ingest stores the object first and records it second; a crash in between leaves an orphan that no client
was told about (it got no 2xx). Orphans younger than `grace_s` are left alone: they may belong to an
upload still in flight on another ingress replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from qure_ray.storage.catalog import Catalog
from qure_ray.storage.object_store import ObjectInfo, ObjectStore

logger = logging.getLogger(__name__)
DICOM_PREFIX = "dicom/"
DEFAULT_GRACE_S = 600.0


def select_orphans(objects: Iterable[ObjectInfo], known_keys: set[str], *, grace_s: float, now_s: float) -> list[str]:
    """Keys of originals no catalog row names and older than the grace period."""
    cutoff = now_s - grace_s
    return [info.key for info in objects if info.key not in known_keys and info.modified_at < cutoff]


def remove_orphans(store: ObjectStore, catalog: Catalog, *, grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    orphans = select_orphans(
        store.list_objects(DICOM_PREFIX), catalog.object_keys(), grace_s=grace_s, now_s=time.time()
    )
    for key in orphans:
        store.delete(key)
    if orphans:
        logger.warning("removed %d orphaned original(s) with no catalog row", len(orphans))
    return orphans
