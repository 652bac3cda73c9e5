from __future__ import annotations

import os
import time
from pathlib import Path

from qure_ray.storage import Catalog, LocalObjectStore, received_rows
from qure_ray.storage.reconcile import remove_orphans
from tests.unit.test_catalog import make_record


def test_only_old_objects_without_a_catalog_row_are_removed(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = Catalog(store)
    recorded = make_record(sop_uid="1.2.3.4")
    store.put(recorded.object_key, b"recorded")
    catalog.commit(received_rows(recorded))
    old_orphan = "dicom/site-a/1.2.3/1.2.3.1/1.2.3.5.dcm"
    fresh_orphan = "dicom/site-a/1.2.3/1.2.3.1/1.2.3.6.dcm"
    store.put(old_orphan, b"crashed before the catalog row")
    store.put(fresh_orphan, b"an upload in flight")
    hour_ago = time.time() - 3600
    os.utime(tmp_path / old_orphan, (hour_ago, hour_ago))
    os.utime(tmp_path / recorded.object_key, (hour_ago, hour_ago))

    assert remove_orphans(store, catalog, grace_s=600) == [old_orphan]
    assert store.exists(recorded.object_key) and store.exists(fresh_orphan) and not store.exists(old_orphan)
