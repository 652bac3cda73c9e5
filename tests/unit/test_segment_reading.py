"""Reading a table's segments while another writer merges them (`qure_ray.storage.segment_reading`)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qure_ray.errors import ObjectMissingError, StorageError
from qure_ray.records import InstanceState
from qure_ray.storage import Batch, Catalog, LocalObjectStore, event_row, segment_reading
from qure_ray.storage.keys import segment_key
from qure_ray.storage.segment_reading import read_live_segments, unique_rows

PREFIX = "catalog/events/"


@pytest.fixture(autouse=True)
def no_pause_between_listings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_reading, "RELIST_PAUSE_S", 0.0)


def three_segments(root: Path) -> set[str]:
    """Three event segments of one row each; returns the row ids."""
    catalog = Catalog(LocalObjectStore(root))
    for n in range(3):
        batch = Batch()
        batch.add("events", event_row("site-a", f"1.2.3.{n}", InstanceState.QUEUED))
        catalog.commit(batch)
    return set(catalog.query("SELECT row_id FROM events").column("row_id").to_pylist())


class MergesDuringReads(LocalObjectStore):
    """Another writer merges every events segment into one the moment the first of them is read, as
    `Catalog._replace_segments` does: the merged segment is written, then the old ones are deleted. The first
    `stale_listings` listings still show the deleted keys (a listing that lags deletes for a moment)."""

    def __init__(self, root: Path, *, merges: int = 1, stale_listings: int = 0) -> None:
        super().__init__(root)
        self.merges_left = merges
        self.stale_listings = stale_listings
        self.deleted: list[str] = []
        self.merged_keys: list[str] = []

    def get(self, key: str) -> bytes:
        if key.startswith(PREFIX) and self.merges_left:
            self.merges_left -= 1
            self._merge()
        return super().get(key)

    def _merge(self) -> None:
        old = super().list_keys(PREFIX)
        rows = pa.concat_tables([pq.read_table(io.BytesIO(super(MergesDuringReads, self).get(k))) for k in old])
        buffer = io.BytesIO()
        pq.write_table(rows, buffer)
        merged = segment_key("events", 10**19 + len(self.merged_keys), "merged")
        self.put(merged, buffer.getvalue())
        self.merged_keys.append(merged)
        for key in old:
            self.delete(key)
        self.deleted += old

    def list_keys(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        keys = super().list_keys(prefix, start_after=start_after)
        if self.stale_listings:
            self.stale_listings -= 1
            return sorted({*keys, *self.deleted})
        return keys


def read_ids(store: LocalObjectStore) -> tuple[list[str], list[str]]:
    keys, rows = read_live_segments(store, "events")
    assert rows is not None
    return keys, rows.column("row_id").to_pylist()


def test_a_missing_object_is_told_apart_from_a_failing_store(tmp_path: Path) -> None:
    with pytest.raises(ObjectMissingError):
        LocalObjectStore(tmp_path).get("catalog/events/nothing.parquet")


def test_segments_merged_away_mid_read_give_every_row_once(tmp_path: Path) -> None:
    ids = three_segments(tmp_path)
    store = MergesDuringReads(tmp_path)
    keys, read = read_ids(store)
    assert len(store.deleted) == 3  # the merge really raced the reads
    assert keys == store.merged_keys and sorted(read) == sorted(ids)


def test_a_listing_that_still_shows_deleted_segments_ends_and_loses_no_row(tmp_path: Path) -> None:
    ids = three_segments(tmp_path)
    store = MergesDuringReads(tmp_path, merges=2, stale_listings=3)
    keys, read = read_ids(store)
    assert keys == [store.merged_keys[-1]] and sorted(read) == sorted(ids)


def test_a_segment_read_before_its_merge_is_not_counted_twice(tmp_path: Path) -> None:
    ids = three_segments(tmp_path)
    store = LocalObjectStore(tmp_path)
    first = sorted(store.list_keys(PREFIX))[0]
    rows = pa.concat_tables([pq.read_table(io.BytesIO(store.get(key))) for key in store.list_keys(PREFIX)])
    buffer = io.BytesIO()
    pq.write_table(rows, buffer)
    store.put(segment_key("events", 10**19, "merged"), buffer.getvalue())  # the merge wrote; deletes are to come
    keys, read = read_ids(store)
    assert first in keys and len(keys) == 4
    assert sorted(read) == sorted(ids)


def test_a_table_whose_segments_keep_going_away_is_an_error_not_a_loop(tmp_path: Path) -> None:
    three_segments(tmp_path)
    store = MergesDuringReads(tmp_path, merges=10**9)  # a merge before every read
    with pytest.raises(StorageError, match="could not be read"):
        read_live_segments(store, "events")


class ReadsLagListings(LocalObjectStore):
    """Answers 404 for the first read of each listed segment, though it is there (reads lag listings)."""

    def __init__(self, root: Path, *, always: bool = False) -> None:
        super().__init__(root)
        self.always = always
        self.refused: set[str] = set()

    def get(self, key: str) -> bytes:
        if key.startswith(PREFIX) and (self.always or key not in self.refused):
            self.refused.add(key)
            raise ObjectMissingError(f"{key}: 404 for a moment")
        return super().get(key)


def test_a_listed_segment_that_cannot_be_read_for_a_moment_is_read_again_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropped, its rows would be lost at the next start, and reconciliation would remove their originals."""
    ids = three_segments(tmp_path)
    keys, read = read_ids(ReadsLagListings(tmp_path))
    assert len(keys) == 3 and sorted(read) == sorted(ids)
    pauses: list[float] = []
    monkeypatch.setattr(segment_reading.time, "sleep", pauses.append)
    with pytest.raises(StorageError, match="could not be read"):  # still listed, never readable: not a load
        read_live_segments(ReadsLagListings(tmp_path, always=True), "events")
    assert len(pauses) == segment_reading.MAX_LISTINGS - 1  # a pause between listings, none after the last


def test_unique_rows_keeps_the_first_of_each_row_id_in_order() -> None:
    table = pa.table({"row_id": ["a", "b", "a", "c", "b"], "n": [1, 2, 3, 4, 5]})
    assert unique_rows(table).to_pydict() == {"row_id": ["a", "b", "c"], "n": [1, 2, 4]}
    assert len(unique_rows(table.slice(0, 0))) == 0
