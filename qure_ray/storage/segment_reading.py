"""Reading a catalog table's Parquet segments while a writer may be merging them.

A merge writes the merged segment before it deletes the segments it replaces (`Catalog._replace_segments`), so
a segment that goes missing between a listing and its read has its rows in a segment a later listing shows.
`read_live_segments` lists again and reads the keys it has not read yet; rows it read twice (from a segment and
from the one it was merged into) are kept once, by `row_id`.
"""

from __future__ import annotations

import io
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from qure_ray.errors import ObjectMissingError, StorageError
from qure_ray.storage.keys import CATALOG_PREFIX
from qure_ray.storage.object_store import ObjectStore
from qure_ray.storage.schema import TABLES

logger = logging.getLogger(__name__)

MAX_LISTINGS = 20
"""Each listing after the first follows a merge that raced the reads (merges come at most every few flushes), or
a store whose listings and reads disagreed for a moment."""
RELIST_PAUSE_S = 0.05
"""The pause before the second listing, doubling for each further one up to a second (about 15 s in all)."""


def read_segment(store: ObjectStore, table: str, key: str) -> pa.Table:
    """One segment of a table, in the table's current schema."""
    return conform(pq.read_table(io.BytesIO(store.get(key))), TABLES[table])


def read_live_segments(store: ObjectStore, table: str) -> tuple[list[str], pa.Table | None]:
    """The keys a table's last listing showed and every row they hold (None when there are none).

    A listed key that cannot be read is looked for again in a new listing: gone from it, it was merged away;
    still listed, it is read again (a store whose reads lag its listings answers 404 for a moment). It is never
    skipped while listed: a catalog loaded without it would lose its rows, and reconciliation would then
    remove the originals they name."""
    read: dict[str, pa.Table] = {}
    for attempt in range(MAX_LISTINGS):
        listed = store.list_keys(f"{CATALOG_PREFIX}{table}/")
        unread = False
        for key in listed:
            if key in read:
                continue
            try:
                read[key] = read_segment(store, table, key)
            except ObjectMissingError:
                unread = True
        if not unread:
            return listed, unique_rows(pa.concat_tables([read[key] for key in listed])) if listed else None
        if attempt + 1 < MAX_LISTINGS:
            logger.info("a listed %s segment could not be read (merged away meanwhile?): listing again", table)
            time.sleep(min(1.0, RELIST_PAUSE_S * 2**attempt))
    raise StorageError(f"{table} segments listed could not be read ({MAX_LISTINGS} listings)")


def unique_rows(table: pa.Table) -> pa.Table:
    """The table with each `row_id` once (its first row)."""
    if len(pc.unique(table.column("row_id"))) == len(table):  # the usual case, checked in a fifth of the time
        return table
    positions = pa.array(range(len(table)), pa.int64())
    by_id = table.select(["row_id"]).append_column("position", positions).group_by("row_id", use_threads=False)
    first = by_id.aggregate([("position", "min")]).column("position_min")
    return table.take(pc.take(first, pc.sort_indices(first)))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A segment in the current schema: columns added since it was written are null, in schema order."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
