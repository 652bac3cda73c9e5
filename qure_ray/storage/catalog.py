"""`Catalog`: the tables `instances`, `events`, `results`, ... as Arrow in memory, persisted as Parquet segments
on the store, queried with DuckDB.

Writes arrive as `Batch`es; `commit(batch)` writes one Parquet segment per table touched (atomically, on
the object store) and only then adds the rows to memory (`CurrentState`), so a row is visible only once durable.
The frequent questions are answered from `CurrentState`'s indexes; DuckDB queries the same Arrow rows in place
(`query`), so the rows are held once. At start-up every segment is loaded back (deduplicated by `row_id`;
`qure_ray.storage.segment_reading`) and, past a threshold, compacted into one; while running, `merge_segments`
merges small segments into larger ones.

The class is single-threaded and synchronous; `GroupCommitter` gathers concurrent writers into batches.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from qure_ray.records import (
    UNFINISHED_STATES,
    DeliveryOutcome,
    IngestOutcomeKind,
    InstanceRecord,
    InstanceState,
    Notification,
    ResultRecord,
    SeriesRef,
    SeriesTrigger,
    Webhook,
)
from qure_ray.storage.current import INDEX_ORDER, CurrentState
from qure_ray.storage.keys import CATALOG_PREFIX, segment_key, segment_named_ns
from qure_ray.storage.merging import MERGE_FAN_IN, merge_groups
from qure_ray.storage.object_store import ObjectStore
from qure_ray.storage.schema import NEWEST_BY, TABLES
from qure_ray.storage.segment_reading import read_live_segments, read_segment, unique_rows

logger = logging.getLogger(__name__)

COMPACT_AFTER_SEGMENTS = 32
FOREIGN_LISTING_OVERLAP_NS = 60 * 10**9
"""`foreign_segments` lists only keys named after the newest one it saw minus this: a segment's key is named
(by its time) before its upload, which may finish after a later-named key is already listed."""


@dataclass(frozen=True)
class Unsettled:
    """A condition on an instance's rows in a batch: the instance still holds the content that was processed
    and is still in one of `states`. Checked by the committer in commit order, so a state or result is never
    written for content an upload has replaced meanwhile, nor for an instance settled (or held for its series)
    by another writer. When it fails, the instance's events and results are left out."""

    source: str
    sop_uid: str
    sha256: str
    states: frozenset[InstanceState] = frozenset(UNFINISHED_STATES)

    drops: ClassVar[tuple[str, ...]] = ("events", "results")

    @classmethod
    def of(
        cls, record: InstanceRecord, *, states: frozenset[InstanceState] = frozenset(UNFINISHED_STATES)
    ) -> Unsettled:
        """The condition that `record`'s content is still the instance's, in one of `states`."""
        return cls(record.source, record.sop_uid, record.sha256, states)

    def holds(self, sha256: str | None, state: InstanceState | None) -> bool:
        return sha256 == self.sha256 and state in self.states


@dataclass(frozen=True)
class Unrecorded:
    """A condition on an upload's rows: the instance does not already hold this content. Two uploads of the
    same content at once both find no record and both store it; only the first to commit records it. The
    second is a duplicate: its `queued` would have reopened an instance the job manager may have settled
    meanwhile, for a second result and a second webhook. When it fails, all of the instance's rows are left
    out."""

    source: str
    sop_uid: str
    sha256: str

    drops: ClassVar[tuple[str, ...]] = ("instances", "events", "results")

    def holds(self, sha256: str | None, state: InstanceState | None) -> bool:
        return sha256 != self.sha256


Condition = Unsettled | Unrecorded


@dataclass
class Batch:
    """Rows to append, per table. Rows are plain dicts in the table's schema, without `row_id`."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    only_if: tuple[Condition, ...] = ()
    """Conditions checked as the batch commits (`GroupCommitter`): the rows an instance's failed condition
    `drops` are not written; the other rows are."""

    def add(self, table: str, row: dict[str, Any]) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown catalog table {table!r}")
        self.rows.setdefault(table, []).append(row)

    def extend(self, other: Batch) -> None:
        """Add `other`'s rows and its conditions."""
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        self.only_if += other.only_if

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


_last_timestamp = datetime.min.replace(tzinfo=UTC)
_ahead = timedelta(0)
"""How far `now()` runs ahead of this machine's clock: as far as the newest stamp loaded was (`_not_before`)."""
AHEAD_WARNING = timedelta(seconds=1)


def now() -> datetime:
    """The current UTC time, strictly increasing within this process (so events of one writer order)."""
    global _last_timestamp
    current = datetime.now(UTC) + _ahead
    if current <= _last_timestamp:
        current = _last_timestamp + timedelta(microseconds=1)
    _last_timestamp = current
    return current


def _not_before(table: str, rows: pa.Table) -> None:
    """After loading another writer's rows, `now()` stamps later than all of them, even should this machine's
    clock be behind that writer's: a state, result or registration this catalog writes is newer than every one
    it read. It then runs ahead by as much, at the clock's pace: pinned to the newest stamp, it would creep a
    microsecond per call, and durations between its stamps (a head-CT series' quiet period) would never pass."""
    global _last_timestamp, _ahead
    column = NEWEST_BY.get(table)
    if column is not None and len(rows):
        newest = pc.max(rows.column(column)).as_py()
        if newest is not None:
            _last_timestamp = max(_last_timestamp, newest)
            ahead = newest - datetime.now(UTC)
            if ahead > _ahead:
                if ahead > AHEAD_WARNING:
                    logger.warning("a %s row is stamped %.0f s ahead of this clock; stamps now follow it (check NTP)",
                                   table, ahead.total_seconds())  # fmt: skip
                _ahead = ahead


def received_rows(record: InstanceRecord, *, settled: ResultRecord | None = None) -> Batch:
    """The batch that makes a stored instance visible: its metadata row, its `received` event, then its `queued`
    event, or, for an instance settled at ingest (no use case reads it), its result and final event. Written
    only if the instance does not hold this content already (`Unrecorded`)."""
    batch = Batch(only_if=(Unrecorded(record.source, record.sop_uid, record.sha256),))
    batch.add(
        "instances",
        {name: getattr(record, name) for name in TABLES["instances"].names if name != "row_id"},
    )
    batch.add("events", event_row(record.source, record.sop_uid, InstanceState.RECEIVED))
    if settled is None:
        batch.add("events", event_row(record.source, record.sop_uid, InstanceState.QUEUED))
    else:
        batch.extend(settled_rows(settled))
    return batch


def result_row(result: ResultRecord) -> dict[str, Any]:
    return {**result.to_row(), "finished_at": now()}


def settled_rows(result: ResultRecord) -> Batch:
    """An instance's result and its event of the same state. A held slice gets only the event: its result will
    be its series'."""
    batch = Batch()
    if result.state is not InstanceState.HELD:
        batch.add("results", result_row(result))
    batch.add("events", event_row(result.source, result.sop_uid, result.state, result.reason))
    return batch


def ingest_log_row(source: str, sop_uid: str, outcome: IngestOutcomeKind, sha256: str, detail: str = "") -> Batch:
    batch = Batch()
    batch.add(
        "ingest_log",
        {
            "source": source,
            "sop_uid": sop_uid,
            "outcome": outcome.value,
            "sha256": sha256,
            "detail": detail,
            "logged_at": now(),
        },
    )
    return batch


def event_row(source: str, sop_uid: str, state: InstanceState, reason: str = "") -> dict[str, Any]:
    return {"source": source, "sop_uid": sop_uid, "state": state.value, "reason": reason, "event_at": now()}


def series_start_row(source: str, series_uid: str, trigger: SeriesTrigger) -> Batch:
    batch = Batch()
    batch.add("series", {"source": source, "series_uid": series_uid, "trigger": trigger.value, "started_at": now()})
    return batch


def webhook_row(source: str, url: str, secret: str, *, active: bool, registered_at: datetime | None = None) -> Batch:
    """A source's webhook; `registered_at` is kept when only the stored secret changes (results finished since
    the registration stay due), otherwise stamped as it commits (`stamp_registrations`)."""
    batch = Batch()
    batch.add(
        "webhooks",
        {"source": source, "url": url, "secret": secret, "active": active, "registered_at": registered_at},
    )
    return batch


def stamp_registrations(batch: Batch) -> None:
    """Stamp new webhook registrations now, where they commit: which results a webhook announces compares its
    registration with results' `finished_at`, which the committer stamps, not with the ingress's clock."""
    for row in batch.rows.get("webhooks", []):
        if row["registered_at"] is None:
            row["registered_at"] = now()


def delivery_row(
    notification: Notification, *, attempt: int, outcome: DeliveryOutcome, status_code: int | None, error: str = ""
) -> Batch:
    batch = Batch()
    batch.add(
        "webhook_deliveries",
        {
            "source": notification.source,
            "result_row_id": notification.result_row_id,
            "uid": notification.uid,
            "attempt": attempt,
            "status_code": status_code,
            "error": error,
            "outcome": outcome.value,
            "attempted_at": now(),
        },
    )
    return batch


class Catalog:
    """The catalog of one object store. Only one process may own it at a time (the Catalog actor)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.segments: set[str] = set()
        """Keys of the segments whose rows are loaded (read at start, written here, or found by `refresh`)."""
        self._flushes: list[list[str]] = []
        """Keys written by each flush in progress (`persist`): not merged until it is done."""
        self._listed_after: dict[str, str] = {}
        """Per table, where `foreign_segments`' next listing starts (see FOREIGN_LISTING_OVERLAP_NS)."""
        self.current = CurrentState()
        """Every row, and the newest state of everything for the frequent questions (`qure_ray.storage.current`)."""
        self.db = duckdb.connect(":memory:")
        """SQL over `current.rows` (see `query`); it holds no rows of its own."""
        self._load()

    # -- persistence -------------------------------------------------------------------------------

    def _load(self) -> None:
        started = time.perf_counter()
        for table in INDEX_ORDER:
            keys, loaded = read_live_segments(self.store, table)  # a replaced replica may still merge
            if loaded is None:
                continue
            self.current.add(table, loaded)  # each row_id once already
            _not_before(table, loaded)
            self.segments.update(keys)
            if len(keys) > COMPACT_AFTER_SEGMENTS:  # the whole table as one segment
                self._replace_segments(table, self.current.rows[table].table(), keys)
        pa.default_memory_pool().release_unused()  # what reading and combining the segments took: a third more
        logger.info(
            "catalog loaded from %s in %.2fs: %s",
            self.store.describe(),
            time.perf_counter() - started,
            {table: self.count(table) for table in TABLES},
        )

    def read_segments(self, table: str, keys: list[str]) -> pa.Table:
        """Segments of a table, in its current schema. Touches only the store: safe off the owner's thread."""
        return pa.concat_tables([read_segment(self.store, table, key) for key in keys])

    def insert_segments(self, table: str, keys: list[str], loaded: pa.Table) -> None:
        """Make segments another writer added visible; rows already present (same `row_id`) are skipped."""
        fresh = unique_rows(loaded)
        present = self.current.rows[table]
        if len(present):
            known = present.table().column("row_id").combine_chunks()
            fresh = fresh.filter(pc.invert(pc.is_in(fresh.column("row_id"), value_set=known)))
        self.current.add(table, fresh)
        _not_before(table, fresh)
        self.segments.update(keys)

    def foreign_segments(self, *, whole: bool = False) -> dict[str, list[str]]:
        """Segments another writer has added since this catalog loaded (during a rolling update the catalog
        actor being replaced still writes for a while), per table. Store only: safe off the owner's thread.

        Each listing starts shortly before the newest key the last one saw; `whole` lists every key, for the
        last look once the other writer is gone (a segment it named long before its upload landed, after slow
        retries or with a clock behind, sorts before that start)."""
        found = {}
        for table in INDEX_ORDER:
            start_after = None if whole else self._listed_after.get(table)
            listed = self.store.list_keys(f"{CATALOG_PREFIX}{table}/", start_after=start_after)
            named_ns = segment_named_ns(listed[-1]) if listed else None
            if named_ns is not None:  # keys sort by naming time: the next listing starts shortly before the newest
                self._listed_after[table] = segment_key(table, max(0, named_ns - FOREIGN_LISTING_OVERLAP_NS))
            new = [key for key in listed if key not in self.segments]
            if new:
                found[table] = new
        return found

    def merge_segments(self, table: str, fan_in: int = MERGE_FAN_IN) -> int:
        """Merge this catalog's segments of `table` tier by tier (see `qure_ray.storage.merging`); returns how
        many segments were replaced. Rows do not change, only where they are stored: the merged segment is
        durable before the old ones go. Touches only the store: safe off the owner's thread."""
        listed = self.store.list_objects(f"{CATALOG_PREFIX}{table}/")
        flushing = {key for keys in list(self._flushes) for key in keys}  # after the listing: see `persist`
        # never one another writer has not shown us, nor one of a flush that may yet be rolled back
        own = [info for info in listed if info.key in self.segments and info.key not in flushing]
        replaced = 0
        for keys in merge_groups(own, fan_in):
            self._replace_segments(table, self.read_segments(table, keys), keys)
            replaced += len(keys)
        return replaced

    def _replace_segments(self, table: str, arrow: pa.Table, old_keys: list[str]) -> None:
        """`arrow` (the rows of `old_keys`, or more) as one segment; it is durable before the old ones go."""
        self._write_segment(table, arrow, [])
        for key in old_keys:
            self.store.delete(key)
        self.segments.difference_update(old_keys)

    def _write_segment(self, table: str, arrow: pa.Table, written: list[str]) -> None:
        """Write one segment; its key goes in `written` before the put (which may land and still raise)."""
        buffer = io.BytesIO()
        pq.write_table(arrow, buffer, compression="zstd")
        key = segment_key(table, time.time_ns(), uuid.uuid4().hex[:12])
        self.segments.add(key)  # before it exists: `refresh` must never load our own rows before `apply` does
        written.append(key)
        self.store.put(key, buffer.getvalue())

    def persist(self, batch: Batch) -> dict[str, pa.Table]:
        """Write the batch as one segment per table. Touches only the store: safe off the owner's thread.

        A batch spans tables but the store writes one object at a time. When a write fails, the segments
        already written are deleted again, so a failed flush leaves nothing a restart would load. Should the
        process die between two writes, `events` come last: an instance then has at worst a result without
        its final state (it is run again), never a final state without its result (answered 202 for ever)."""
        arrows = {}
        for table, rows in batch.rows.items():
            if rows:
                full = [{"row_id": uuid.uuid4().hex, **row} for row in rows]
                arrows[table] = pa.Table.from_pylist(full, schema=TABLES[table])
        written: list[str] = []
        self._flushes.append(written)  # merging (another thread) leaves these alone until the flush is done
        try:
            for table in sorted(arrows, key=lambda name: name == "events"):
                self._write_segment(table, arrows[table], written)
        except Exception:
            self._delete_segments(written)
            raise
        finally:
            self._flushes.remove(written)
        return arrows

    def _delete_segments(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.store.delete(key)
            except Exception as exc:  # left behind: a restart loads it (see `persist` for why that is benign)
                logger.error("could not remove segment %s of a failed flush: %s", key, exc)
            else:
                self.segments.discard(key)

    def apply(self, arrows: dict[str, pa.Table]) -> None:
        """Make persisted rows visible to queries."""
        for table, arrow in arrows.items():
            self.current.add(table, arrow)

    def commit(self, batch: Batch) -> None:
        """Make the batch durable, then visible (single-threaded use; `GroupCommitter` for concurrent writers)."""
        stamp_registrations(batch)
        self.apply(self.persist(batch))

    # -- queries -----------------------------------------------------------------------------------

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """DuckDB `sql` over the catalog's tables (every row, as in the Parquet segments), answered as Arrow.
        DuckDB reads the rows in place; nothing is copied into it."""
        for table, rows in self.current.rows.items():
            self.db.register(table, rows.table())
        try:
            return self.db.execute(sql, params or []).fetch_arrow_table()
        finally:
            for table in self.current.rows:
                self.db.unregister(table)

    def count(self, table: str) -> int:
        return len(self.current.rows[table])

    def instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        """The instance's latest metadata and state, or None when this source never stored it."""
        return self.current.instance(source, sop_uid)

    def series_instances(self, source: str, series_uid: str) -> list[InstanceRecord]:
        return self.current.series_instances(source, series_uid)

    def has_series(self, source: str, series_uid: str) -> bool:
        """Whether the source stored any instance of the series."""
        return self.current.has_series(source, series_uid)

    def series_started(self, source: str, series_uid: str) -> bool:
        return self.current.is_series_started(source, series_uid)

    def series_due(self, *, quiet_period_s: float, at: datetime) -> list[SeriesRef]:
        """Series with held slices, not started, whose newest instance arrived over `quiet_period_s` ago."""
        return self.current.series_due(quiet_period_s=quiet_period_s, at=at)

    def pending_series(self) -> list[SeriesRef]:
        """Started series without a result yet, oldest first."""
        return self.current.pending()

    def late_slices(self) -> list[InstanceRecord]:
        """Held slices whose series already has its result: they arrived after it was computed."""
        return self.current.late_slices()

    def webhook(self, source: str) -> Webhook | None:
        """The source's active webhook, if any."""
        return self.current.webhook(source)

    def webhook_rows(self) -> list[dict[str, Any]]:
        """Every source's newest webhook row, active or not (the stored secrets, for re-sealing)."""
        return self.current.webhook_rows()

    def newest_webhook_row(self, source: str) -> dict[str, Any] | None:
        return self.current.newest_webhook_row(source)

    def undelivered(self, *, limit: int, exclude: Collection[str] = ()) -> list[Notification]:
        """Final results finished since their source registered its webhook, not yet delivered or given up (not
        those whose result row_id is in `exclude`)."""
        return self.current.undelivered(limit=limit, exclude=exclude)

    def unfinished(self) -> list[InstanceRecord]:
        """Instances whose latest state is received, queued or processing, oldest first."""
        return self.current.unfinished()

    def result(self, source: str, sop_uid: str) -> ResultRecord | None:
        return self.current.result(source, sop_uid)

    def object_keys(self) -> set[str]:
        """Every original's key the catalog knows (any source, any state)."""
        return set(self.query("SELECT DISTINCT object_key FROM instances").column("object_key").to_pylist())

    def states(self) -> dict[str, int]:
        """How many instances are in each state (latest event per instance)."""
        return self.current.states()
