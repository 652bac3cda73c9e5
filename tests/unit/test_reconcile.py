from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from qure_ray.storage import Catalog, LocalObjectStore, received_rows
from qure_ray.storage.object_store import ObjectInfo
from qure_ray.storage.reconcile import remove_orphans
from tests.unit.test_catalog import make_record

HOUR_AGO = time.time() - 3600


def _age(tmp_path: Path, key: str) -> None:
    os.utime(tmp_path / key, (HOUR_AGO, HOUR_AGO))


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
    _age(tmp_path, old_orphan)
    _age(tmp_path, recorded.object_key)

    assert asyncio.run(remove_orphans(store, catalog, grace_s=600)) == [old_orphan]
    assert store.exists(recorded.object_key) and store.exists(fresh_orphan) and not store.exists(old_orphan)


def test_an_orphan_replaced_or_recorded_while_the_store_was_listed_is_kept(tmp_path: Path) -> None:
    """Listing every original takes a while: an upload may replace an orphan (other content) or record it
    (the same content again) after the listing saw it old and unrecorded."""
    replaced = make_record(sop_uid="1.2.3.7")
    recorded = make_record(sop_uid="1.2.3.8")
    gone = make_record(sop_uid="1.2.3.9")

    class UploadsDuringTheListing(LocalObjectStore):
        def list_objects(self, prefix: str) -> list[ObjectInfo]:
            listing = super().list_objects(prefix)
            if prefix == "dicom/":  # the whole listing: replaced after it saw the old content
                self.put(replaced.object_key, b"a new upload's content")
            if prefix == recorded.object_key:  # recorded after the catalog's keys were read
                catalog.commit(received_rows(recorded))
            return listing

    store = UploadsDuringTheListing(tmp_path)
    catalog = Catalog(store)
    for record in (replaced, recorded, gone):
        store.put(record.object_key, b"left by a failed upload")
        _age(tmp_path, record.object_key)

    assert asyncio.run(remove_orphans(store, catalog, grace_s=600)) == [gone.object_key]
    assert store.get(replaced.object_key) == b"a new upload's content" and store.exists(recorded.object_key)
