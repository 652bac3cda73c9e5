"""Arrow schemas of the catalog tables, as persisted in Parquet under `catalog/<table>/`.

Every table is append-only; `row_id` makes rows unique so replayed or duplicated segments load once.
The current state of an instance is its latest `events` row; the latest `instances` row holds its metadata
(a later row exists only when a source's policy lets an instance be overwritten).
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

INSTANCES = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("sop_uid", pa.string()),
        ("study_uid", pa.string()),
        ("series_uid", pa.string()),
        ("sop_class_uid", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("view_position", pa.string()),
        ("series_description", pa.string()),
        ("rows", pa.int32()),
        ("columns", pa.int32()),
        ("transfer_syntax", pa.string()),
        ("size_bytes", pa.int64()),
        ("sha256", pa.string()),
        ("object_key", pa.string()),
        ("received_at", TIMESTAMP),
    ]
)

EVENTS = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("sop_uid", pa.string()),
        ("state", pa.string()),
        ("reason", pa.string()),
        ("event_at", TIMESTAMP),
    ]
)

RESULTS = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("sop_uid", pa.string()),
        ("usecase", pa.string()),
        ("state", pa.string()),
        ("triage_status", pa.string()),
        ("scores_json", pa.string()),
        ("decisions_json", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("model_trained", pa.bool_()),
        ("model_trained_on", pa.string()),
        ("timings_json", pa.string()),
        ("reason", pa.string()),
        ("assets_json", pa.string()),
        ("slices_json", pa.string()),
        ("finished_at", TIMESTAMP),
    ]
)

INGEST_LOG = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("sop_uid", pa.string()),
        ("outcome", pa.string()),
        ("sha256", pa.string()),
        ("detail", pa.string()),
        ("logged_at", TIMESTAMP),
    ]
)
"""Every upload of an already-known SOPInstanceUID: duplicate, conflict or overwrite (audit trail)."""

SERIES = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("series_uid", pa.string()),
        ("trigger", pa.string()),
        ("started_at", TIMESTAMP),
    ]
)
"""One row when a per-series computation starts; it is finished once `results` has a row for the series."""

WEBHOOKS = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("secret", pa.string()),
        ("active", pa.bool_()),
        ("registered_at", TIMESTAMP),
    ]
)
"""A source's result callback; its latest row wins (`active` false: removed)."""

WEBHOOK_DELIVERIES = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("result_row_id", pa.string()),
        ("uid", pa.string()),
        ("attempt", pa.int32()),
        ("status_code", pa.int32()),
        ("error", pa.string()),
        ("outcome", pa.string()),
        ("attempted_at", TIMESTAMP),
    ]
)
"""Every attempt to notify a source of a final result; `delivered` or `gave_up` ends the notification."""

TABLES: dict[str, pa.Schema] = {
    "instances": INSTANCES,
    "events": EVENTS,
    "results": RESULTS,
    "ingest_log": INGEST_LOG,
    "series": SERIES,
    "webhooks": WEBHOOKS,
    "webhook_deliveries": WEBHOOK_DELIVERIES,
}

NEWEST_BY: dict[str, str] = {
    "instances": "received_at",
    "events": "event_at",
    "results": "finished_at",
    "webhooks": "registered_at",
}
"""The tables whose newest row per key counts (an instance's content, state, result; a source's webhook), and the
column that decides it. The catalog's committer stamps these columns, and a catalog stamps later than every such
row it loaded."""
