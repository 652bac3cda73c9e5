"""`Catalog`: DuckDB tables `instances`, `events`, `results`, persisted as Parquet segments on the store.

Writes arrive as `Batch`es; `commit(batch)` writes one Parquet segment per table touched (atomically, on
the object store) and only then inserts the rows into DuckDB, so a row is visible only once durable. At
start-up every segment is loaded back (deduplicated by `row_id`) and, past a threshold, compacted into one.

The class is single-threaded and synchronous; `GroupCommitter` gathers concurrent writers into batches.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
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
from qure_ray.storage.keys import CATALOG_PREFIX, catalog_key
from qure_ray.storage.object_store import ObjectStore
from qure_ray.storage.schema import TABLES, duckdb_type

logger = logging.getLogger(__name__)

COMPACT_AFTER_SEGMENTS = 32


@dataclass
class Batch:
    """Rows to append, per table. Rows are plain dicts in the table's schema, without `row_id`."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown catalog table {table!r}")
        self.rows.setdefault(table, []).append(row)

    def extend(self, other: Batch) -> None:
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


_last_timestamp = datetime.min.replace(tzinfo=UTC)


def now() -> datetime:
    """The current UTC time, strictly increasing within this process (so events of one writer order)."""
    global _last_timestamp
    current = datetime.now(UTC)
    if current <= _last_timestamp:
        current = _last_timestamp + timedelta(microseconds=1)
    _last_timestamp = current
    return current


def received_rows(record: InstanceRecord) -> Batch:
    """The batch that makes a stored instance visible: its metadata row and its `queued` event."""
    batch = Batch()
    batch.add(
        "instances",
        {name: getattr(record, name) for name in TABLES["instances"].names if name != "row_id"},
    )
    batch.add("events", event_row(record.source, record.sop_uid, InstanceState.RECEIVED))
    batch.add("events", event_row(record.source, record.sop_uid, InstanceState.QUEUED))
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


def webhook_row(source: str, url: str, secret: str, *, active: bool) -> Batch:
    batch = Batch()
    batch.add("webhooks", {"source": source, "url": url, "secret": secret, "active": active, "registered_at": now()})
    return batch


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
        self.db = duckdb.connect(":memory:")
        for table, schema in TABLES.items():
            columns = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in schema)
            self.db.execute(f"CREATE TABLE {table} ({columns})")
        self._load()

    # -- persistence -------------------------------------------------------------------------------

    def _load(self) -> None:
        started = time.perf_counter()
        for table in TABLES:
            keys = self.store.list_keys(f"{CATALOG_PREFIX}{table}/")
            if not keys:
                continue
            self.insert_segments(table, keys, self.read_segments(table, keys))
            if len(keys) > COMPACT_AFTER_SEGMENTS:
                self._compact(table, keys)
        logger.info(
            "catalog loaded from %s in %.2fs: %s",
            self.store.describe(),
            time.perf_counter() - started,
            {table: self.count(table) for table in TABLES},
        )

    def read_segments(self, table: str, keys: list[str]) -> pa.Table:
        """Segments of a table, in its current schema. Touches only the store: safe off the owner's thread."""
        return pa.concat_tables(
            [_conform(pq.read_table(io.BytesIO(self.store.get(key))), TABLES[table]) for key in keys]
        )

    def insert_segments(self, table: str, keys: list[str], loaded: pa.Table) -> None:
        """Make read segments visible; rows already present (same `row_id`) are skipped."""
        self.db.execute(
            f"INSERT INTO {table} SELECT DISTINCT ON (row_id) * FROM loaded "
            f"WHERE row_id NOT IN (SELECT row_id FROM {table})"
        )
        self.segments.update(keys)

    def foreign_segments(self) -> dict[str, list[str]]:
        """Segments another writer has added since this catalog loaded (during a rolling update the catalog
        actor being replaced still writes for a while), per table. Store only: safe off the owner's thread."""
        found = {}
        for table in TABLES:
            new = [key for key in self.store.list_keys(f"{CATALOG_PREFIX}{table}/") if key not in self.segments]
            if new:
                found[table] = new
        return found

    def _compact(self, table: str, old_keys: list[str]) -> None:
        """Rewrite a table as one segment; the new segment is durable before the old ones go."""
        arrow = self.db.execute(f"SELECT * FROM {table}").fetch_arrow_table().cast(TABLES[table])
        self._write_segment(table, arrow)
        for key in old_keys:
            self.store.delete(key)
        self.segments.difference_update(old_keys)

    def _write_segment(self, table: str, arrow: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(arrow, buffer, compression="zstd")
        key = catalog_key(table, f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}")
        self.segments.add(key)  # before it exists: `refresh` must never load our own rows before `apply` does
        self.store.put(key, buffer.getvalue())

    def persist(self, batch: Batch) -> dict[str, pa.Table]:
        """Write the batch as one segment per table. Touches only the store: safe off the owner's thread."""
        arrows = {}
        for table, rows in batch.rows.items():
            if rows:
                full = [{"row_id": uuid.uuid4().hex, **row} for row in rows]
                arrows[table] = pa.Table.from_pylist(full, schema=TABLES[table])
        for table, arrow in arrows.items():
            self._write_segment(table, arrow)
        return arrows

    def apply(self, arrows: dict[str, pa.Table]) -> None:
        """Make persisted rows visible to queries."""
        for table, arrow in arrows.items():  # noqa: B007 - `arrow` is read by name in the SQL
            self.db.execute(f"INSERT INTO {table} SELECT * FROM arrow")

    def commit(self, batch: Batch) -> None:
        """Make the batch durable, then visible."""
        self.apply(self.persist(batch))

    # -- queries -----------------------------------------------------------------------------------

    def count(self, table: str) -> int:
        row = self.db.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        """The instance's latest metadata and state, or None when this source never stored it."""
        records = self._instances("i.source = ? AND i.sop_uid = ?", [source, sop_uid])
        return records[0] if records else None

    def series_instances(self, source: str, series_uid: str) -> list[InstanceRecord]:
        return self._instances("i.source = ? AND i.series_uid = ?", [source, series_uid])

    def series_started(self, source: str, series_uid: str) -> bool:
        row = self.db.execute(
            "SELECT count(*) FROM series WHERE source = ? AND series_uid = ?", [source, series_uid]
        ).fetchone()
        return bool(row and row[0])

    def series_due(self, *, quiet_period_s: float, at: datetime) -> list[SeriesRef]:
        """Series with held slices, not started, whose newest instance arrived over `quiet_period_s` ago."""
        rows = self.db.execute(
            f"""
            SELECT i.source, i.series_uid
            FROM instances i JOIN ({_LATEST_EVENTS}) e USING (source, sop_uid)
            WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.source = i.source AND s.series_uid = i.series_uid)
            GROUP BY i.source, i.series_uid
            HAVING bool_or(e.state = ?) AND max(i.received_at) < ?
            ORDER BY max(i.received_at)
            """,
            [InstanceState.HELD.value, at - timedelta(seconds=quiet_period_s)],
        ).fetchall()
        return [SeriesRef(source=str(source), series_uid=str(uid)) for source, uid in rows]

    def pending_series(self) -> list[SeriesRef]:
        """Started series without a result yet, oldest first."""
        rows = self.db.execute(
            """
            SELECT source, series_uid FROM series s
            WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.source = s.source AND r.sop_uid = s.series_uid)
            GROUP BY source, series_uid ORDER BY min(started_at)
            """
        ).fetchall()
        return [SeriesRef(source=str(source), series_uid=str(uid)) for source, uid in rows]

    def late_slices(self) -> list[InstanceRecord]:
        """Held slices whose series already has its result: they arrived after it was computed."""
        return self._instances(
            "e.state = ? AND EXISTS (SELECT 1 FROM results r WHERE r.source = i.source AND r.sop_uid = i.series_uid)",
            [InstanceState.HELD.value],
        )

    def webhook(self, source: str) -> Webhook | None:
        """The source's active webhook, if any."""
        row = self.db.execute(
            "SELECT url, secret, active FROM webhooks WHERE source = ? ORDER BY registered_at DESC LIMIT 1", [source]
        ).fetchone()
        return Webhook(source=source, url=str(row[0]), secret=str(row[1])) if row and row[2] else None

    def undelivered(self, *, limit: int) -> list[Notification]:
        """Final results finished since their source registered its webhook, not yet delivered or given up."""
        rows = self.db.execute(
            """
            WITH hooks AS (
                SELECT * FROM webhooks
                QUALIFY row_number() OVER (PARTITION BY source ORDER BY registered_at DESC) = 1
            ), uids AS (
                SELECT DISTINCT ON (source, sop_uid) source, sop_uid, study_uid, series_uid FROM instances
            ), series_uids AS (
                SELECT DISTINCT ON (source, series_uid) source, series_uid, study_uid FROM instances
            )
            SELECT r.row_id, r.source, r.sop_uid, coalesce(u.study_uid, s.study_uid, ''),
                   coalesce(u.series_uid, s.series_uid, ''), r.usecase, r.state, r.triage_status, r.finished_at,
                   h.url, h.secret
            FROM results r
            JOIN hooks h ON h.source = r.source AND h.active AND r.finished_at >= h.registered_at
            LEFT JOIN uids u ON u.source = r.source AND u.sop_uid = r.sop_uid
            LEFT JOIN series_uids s ON s.source = r.source AND s.series_uid = r.sop_uid
            WHERE NOT EXISTS (
                SELECT 1 FROM webhook_deliveries d WHERE d.result_row_id = r.row_id AND d.outcome IN (?, ?)
            )
            ORDER BY r.finished_at
            LIMIT ?
            """,
            [DeliveryOutcome.DELIVERED.value, DeliveryOutcome.GAVE_UP.value, limit],
        ).fetchall()
        return [
            Notification(
                result_row_id=str(row_id),
                source=str(source),
                uid=str(uid),
                study_uid=str(study),
                series_uid=str(series),
                usecase=str(usecase),
                status=str(state),
                triage_status=triage,
                finished_at=finished,
                webhook=Webhook(source=str(source), url=str(url), secret=str(secret)),
            )
            for row_id, source, uid, study, series, usecase, state, triage, finished, url, secret in rows
        ]

    def unfinished(self) -> list[InstanceRecord]:
        """Instances whose latest state is received, queued or processing, oldest first."""
        states = [state.value for state in UNFINISHED_STATES]
        placeholders = ", ".join("?" for _ in states)
        return self._instances(f"e.state IN ({placeholders})", states)

    def _instances(self, where: str, params: Iterable[Any]) -> list[InstanceRecord]:
        rows = self.db.execute(
            f"""
            SELECT i.*, e.state AS state, e.reason AS reason
            FROM (
                SELECT * FROM instances
                QUALIFY row_number() OVER (PARTITION BY source, sop_uid ORDER BY received_at DESC) = 1
            ) i
            JOIN ({_LATEST_EVENTS}) e USING (source, sop_uid)
            WHERE {where}
            ORDER BY i.received_at
            """,
            list(params),
        )
        columns = [d[0] for d in rows.description]
        return [_instance_record(dict(zip(columns, row, strict=True))) for row in rows.fetchall()]

    def result(self, source: str, sop_uid: str) -> ResultRecord | None:
        rows = self.db.execute(
            "SELECT * FROM results WHERE source = ? AND sop_uid = ? ORDER BY finished_at DESC LIMIT 1",
            [source, sop_uid],
        )
        columns = [d[0] for d in rows.description]
        row = rows.fetchone()
        return ResultRecord.from_row(dict(zip(columns, row, strict=True))) if row else None

    def object_keys(self) -> set[str]:
        """Every original's key the catalog knows (any source, any state)."""
        return {str(row[0]) for row in self.db.execute("SELECT DISTINCT object_key FROM instances").fetchall()}

    def states(self) -> dict[str, int]:
        """How many instances are in each state (latest event per instance)."""
        rows = self.db.execute(f"SELECT state, count(*) FROM ({_LATEST_EVENTS}) GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}


_LATEST_EVENTS = """
    SELECT source, sop_uid, state, reason FROM events
    QUALIFY row_number() OVER (PARTITION BY source, sop_uid ORDER BY event_at DESC) = 1
"""


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A segment in the current schema: columns added since it was written are null, in schema order."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _instance_record(row: dict[str, Any]) -> InstanceRecord:
    row.pop("row_id", None)
    row["state"] = InstanceState(row["state"])
    row["reason"] = row.get("reason") or ""
    row["series_description"] = row.get("series_description") or ""
    return InstanceRecord(**row)
