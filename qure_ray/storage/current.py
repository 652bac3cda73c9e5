"""`CurrentState`: the catalog's rows in memory, and what its frequent questions need, indexed as rows become visible.

Uploads, `GET /results` and the job manager's once-a-second checks ask about the *current* state: an instance's
newest state, a result, the slices held for a series, the series started without a result, the results a
webhook still waits for. Each answer here costs about the size of the answer, not of the catalog, so it stays
flat from a thousand to millions of served images. Every row stays in `rows` (Arrow, one `TableRows` per table),
which the indexes point into and DuckDB queries for everything else.

Rows must be added in `INDEX_ORDER` when a whole catalog loads (a result counts for a webhook only once the
webhook is known); afterwards, in whatever order they become visible.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from qure_ray.records import (
    UNFINISHED_STATES,
    DeliveryOutcome,
    InstanceRecord,
    InstanceState,
    Notification,
    ResultRecord,
    SeriesRef,
    Webhook,
)
from qure_ray.storage.latest import Key, LatestRows
from qure_ray.storage.schema import NEWEST_BY, TABLES
from qure_ray.storage.table_rows import TableRows

INDEX_ORDER = ("webhooks", "instances", "events", "series", "results", "webhook_deliveries", "ingest_log")
"""The order in which a loading catalog adds its tables (every table of `TABLES` appears once)."""

_FINAL_DELIVERY = {DeliveryOutcome.DELIVERED.value, DeliveryOutcome.GAVE_UP.value}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


class CurrentState:
    def __init__(self) -> None:
        self.rows = {table: TableRows(schema) for table, schema in TABLES.items()}
        """Every row of every table, numbered in the order they were added."""
        self._keys: dict[Key, Key] = {}  # one tuple per (source, uid), shared by the indexes below
        self.instances = LatestRows(("source", "sop_uid"), NEWEST_BY["instances"], rows=self.rows["instances"])
        self.events = LatestRows(("source", "sop_uid"), NEWEST_BY["events"], payload_columns=("state", "reason"))
        self.results = LatestRows(("source", "sop_uid"), NEWEST_BY["results"], rows=self.rows["results"])
        self.webhooks = LatestRows(("source",), NEWEST_BY["webhooks"], rows=self.rows["webhooks"])
        self.by_state: dict[str, set[Key]] = defaultdict(set)
        self._series_members: dict[Key, Key | set[Key]] = {}
        """(source, SeriesInstanceUID) → its instances' keys (`members_of`): the one key itself while the series has
        one, as a chest X-ray's does (a one-key set would cost about 200 bytes per instance), a set from the second."""
        self.series_of: dict[Key, Key] = {}
        """An instance's key → its series' key, from the instance's newest row."""
        self.series_started: dict[Key, int] = {}
        """(source, SeriesInstanceUID) → when its computation first started (µs)."""
        self.pending_series: dict[Key, int] = {}
        """Started series without a result yet → when they started (µs)."""
        self.final_deliveries: set[str] = set()
        self.attempts_made: dict[str, int] = {}
        """Result row_id → its webhook attempts so far, while not final (a restart resumes the count)."""
        self.webhook_active_since: dict[str, int] = {}
        """Source → when its webhook became active (µs): registering again (a new URL or secret) keeps the
        time, so the results still pending then go to the new registration; removing it ends it."""
        self.awaiting_delivery: dict[str, tuple[Key, int]] = {}
        """Result row_id → (its key, finished µs): final results a registered webhook has not had yet."""

    # -- adding rows -------------------------------------------------------------------------------

    def add(self, table: str, arrow: pa.Table) -> None:
        """Keep `arrow`'s rows (in the table's schema) and index them."""
        first = self.rows[table].append(arrow)
        adder = getattr(self, f"_add_{table}", None)
        if adder is not None and len(arrow):
            adder(arrow, first)

    def _add_instances(self, arrow: pa.Table, first: int) -> None:
        series = arrow.column("series_uid").to_pylist()
        positions = {key: number - first for key, _, number in self.instances.add(arrow, first, self._keys)}
        for key, row in positions.items():
            series_key = self._keys.setdefault((key[0], series[row]), (key[0], series[row]))
            before = self.series_of.get(key)
            if before is not None and before != series_key:  # new content in another series: it left this one
                self._remove_member(before, key)
            self._add_member(series_key, key)
            self.series_of[key] = series_key

    def _add_member(self, series_key: Key, key: Key) -> None:
        members = self._series_members.get(series_key)
        if members is None:
            self._series_members[series_key] = key
        elif isinstance(members, set):
            members.add(key)
        elif members != key:
            self._series_members[series_key] = {members, key}

    def _remove_member(self, series_key: Key, key: Key) -> None:
        members = self._series_members.get(series_key)
        if members == key:
            del self._series_members[series_key]
        elif isinstance(members, set):
            members.discard(key)
            if len(members) == 1:
                self._series_members[series_key] = next(iter(members))

    def members_of(self, series_key: Key) -> Collection[Key]:
        """The keys of the instances stored for a series (none when it is unknown)."""
        members = self._series_members.get(series_key)
        if members is None:
            return ()
        return members if isinstance(members, set) else (members,)

    def _add_events(self, arrow: pa.Table, first: int) -> None:
        for key, previous, (state, _) in self.events.add(arrow, first, self._keys):
            if previous is not None:
                self.by_state[previous[0]].discard(key)
            self.by_state[state].add(key)

    def _add_series(self, arrow: pa.Table, first: int) -> None:
        columns = zip(
            arrow.column("source").to_pylist(),
            arrow.column("series_uid").to_pylist(),
            arrow.column("started_at").cast(pa.int64()).to_pylist(),
            strict=True,
        )
        for source, series_uid, started in columns:
            key = self._keys.setdefault((source, series_uid), (source, series_uid))
            self.series_started[key] = min(started, self.series_started.get(key, started))
            if key not in self.results:
                self.pending_series[key] = self.series_started[key]

    def _add_results(self, arrow: pa.Table, first: int) -> None:
        for key, _, _ in self.results.add(arrow, first, self._keys):
            self.pending_series.pop(key, None)
        if len(self.webhooks):
            rows = zip(
                arrow.column("row_id").to_pylist(),
                arrow.column("source").to_pylist(),
                arrow.column("sop_uid").to_pylist(),
                arrow.column("finished_at").cast(pa.int64()).to_pylist(),
                strict=True,
            )
            for row_id, source, sop_uid, finished in rows:
                if row_id not in self.final_deliveries and self._hook_wants(source, finished):
                    self.awaiting_delivery[row_id] = (self._keys.get((source, sop_uid), (source, sop_uid)), finished)

    def _add_webhooks(self, arrow: pa.Table, first: int) -> None:
        columns = ("source", "active", "registered_at")
        rows = list(zip(*(arrow.column(name).to_pylist() for name in columns), strict=True))
        changed = {source for source, _, _ in rows}
        newest = {source: self.webhooks.time((source,)) for source in changed}  # applied before this batch (µs)
        self.webhooks.add(arrow, first)
        for source, active, registered_at in sorted(rows, key=lambda row: row[2]):
            at = _micros(registered_at)
            if at < (newest.get(source) or at):
                continue  # older than one applied already (another replica's segment, loaded late)
            newest[source] = at
            if not active:
                self.webhook_active_since.pop(source, None)
            elif source not in self.webhook_active_since:
                self.webhook_active_since[source] = at
        for row_id, ((owner, _), finished) in list(self.awaiting_delivery.items()):
            if owner in changed and not self._hook_wants(owner, finished):
                del self.awaiting_delivery[row_id]

    def _add_webhook_deliveries(self, arrow: pa.Table, first: int) -> None:
        columns = ("result_row_id", "outcome", "attempt")
        for row_id, outcome, attempt in zip(*(arrow.column(name).to_pylist() for name in columns), strict=True):
            if outcome in _FINAL_DELIVERY:
                self.final_deliveries.add(row_id)
                self.awaiting_delivery.pop(row_id, None)
                self.attempts_made.pop(row_id, None)
            elif row_id not in self.final_deliveries:
                self.attempts_made[row_id] = max(attempt, self.attempts_made.get(row_id, 0))

    def _hook_wants(self, source: str, finished: int) -> bool:
        """Whether the source has had an active webhook since before the result finished."""
        since = self.webhook_active_since.get(source)
        return since is not None and finished >= since

    # -- questions ---------------------------------------------------------------------------------

    def instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        return self._instance((source, sop_uid))

    def _instance(self, key: Key) -> InstanceRecord | None:
        row, event = self.instances.row(key), self.events.payload(key)
        if row is None or event is None:
            return None
        row.pop("row_id", None)
        state, reason = event
        return InstanceRecord(
            **{**row, "series_description": row.get("series_description") or ""},
            state=InstanceState(state),
            reason=reason or "",
        )

    def _instances(self, keys: Iterable[Key]) -> list[InstanceRecord]:
        """Instance records, oldest received first."""
        found = [record for record in map(self._instance, keys) if record is not None]
        return sorted(found, key=lambda record: record.received_at)

    def result(self, source: str, sop_uid: str) -> ResultRecord | None:
        row = self.results.row((source, sop_uid))
        return ResultRecord.from_row(row) if row else None

    def has_series(self, source: str, series_uid: str) -> bool:
        return bool(self.members_of((source, series_uid)))

    def series_instances(self, source: str, series_uid: str) -> list[InstanceRecord]:
        return self._instances(self.members_of((source, series_uid)))

    def is_series_started(self, source: str, series_uid: str) -> bool:
        return (source, series_uid) in self.series_started

    def series_due(self, *, quiet_period_s: float, at: datetime) -> list[SeriesRef]:
        """Series with held slices, not started, whose newest instance arrived over `quiet_period_s` ago."""
        deadline = _micros(at - timedelta(seconds=quiet_period_s))
        newest: dict[Key, int] = {}
        for key in self.by_state[InstanceState.HELD.value]:
            series = self.series_of.get(key)
            if series is None or series in self.series_started or series in newest:
                continue
            newest[series] = max(self.instances.time(member) or 0 for member in self.members_of(series))
        due = sorted((received, series) for series, received in newest.items() if received < deadline)
        return [SeriesRef(source=source, series_uid=uid) for _, (source, uid) in due]

    def pending(self) -> list[SeriesRef]:
        """Started series without a result yet, oldest first."""
        ordered = sorted(self.pending_series.items(), key=lambda item: item[1])
        return [SeriesRef(source=source, series_uid=uid) for (source, uid), _ in ordered]

    def late_slices(self) -> list[InstanceRecord]:
        """Held slices whose series already has its result: they arrived after it was computed."""
        held = self.by_state[InstanceState.HELD.value]
        return self._instances(key for key in held if (series := self.series_of.get(key)) and series in self.results)

    def unfinished(self) -> list[InstanceRecord]:
        """Instances whose newest state is received, queued or processing, oldest first."""
        return self._instances(key for state in UNFINISHED_STATES for key in self.by_state[state.value])

    def states(self) -> dict[str, int]:
        return {state: len(keys) for state, keys in self.by_state.items() if keys}

    def webhook(self, source: str) -> Webhook | None:
        row = self.newest_webhook_row(source)
        return Webhook(source=source, url=row["url"], secret=row["secret"]) if row and row["active"] else None

    def newest_webhook_row(self, source: str) -> dict[str, Any] | None:
        """The source's newest `webhooks` row, active or not."""
        return self.webhooks.row((source,))

    def webhook_rows(self) -> list[dict[str, Any]]:
        """Every source's newest `webhooks` row, active or not."""
        return [row for key in self.webhooks.newest_keys() if (row := self.webhooks.row(key)) is not None]

    def undelivered(self, *, limit: int, exclude: Collection[str] = ()) -> list[Notification]:
        """Final results finished since their source registered its webhook, not yet delivered or given up, oldest
        first; not those whose result row_id is in `exclude` (being delivered already)."""
        waiting = (item for item in self.awaiting_delivery.items() if item[0] not in exclude)
        oldest = heapq.nsmallest(limit, waiting, key=lambda item: item[1][1])  # sorted()[:limit], without the sort
        notifications = []
        for row_id, (key, _) in oldest:
            result, hook = self.results.row(key), self.webhook(key[0])
            if result is None or hook is None:
                continue
            study_uid, series_uid = self._uids_of(key)
            notifications.append(
                Notification(
                    result_row_id=row_id,
                    source=key[0],
                    uid=key[1],
                    study_uid=study_uid,
                    series_uid=series_uid,
                    usecase=result["usecase"],
                    status=result["state"],
                    triage_status=result["triage_status"],
                    finished_at=result["finished_at"],
                    webhook=hook,
                    attempts_made=self.attempts_made.get(row_id, 0),
                )
            )
        return notifications

    def _uids_of(self, key: Key) -> tuple[str, str]:
        """(StudyInstanceUID, SeriesInstanceUID) of a result's uid: an instance's, or a series' own."""
        row = self.instances.row(key)
        if row is not None:
            return row["study_uid"], row["series_uid"]
        members = self.members_of(key)
        if members:
            member = self.instances.row(next(iter(members)))
            return (member["study_uid"] if member else ""), key[1]
        return "", ""
