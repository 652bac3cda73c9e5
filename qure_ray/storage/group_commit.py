"""Group commit: many concurrent writers, one Parquet segment per table per flush.

Each `write(batch)` returns once its rows are durable on the object store and visible in the catalog.
Writes that arrive while a flush is running wait for the next one, so under load a flush carries many
writers' rows and the cost of a segment write is shared.

An instance's state is its newest event, and its result its newest result row, so both are stamped here, in
commit order, as they are flushed:
their writers (ingress replicas, the job manager) may run on machines whose clocks disagree, and a `done`
stamped by a clock a second behind the ingress's `queued` would have lost to it. Commit order is the order
of cause and effect: each step of an instance is written, and waited for, before the next one starts.

A batch may carry conditions (`Batch.only_if`): an instance still holds the content processed and is still
unfinished, or held (`Unsettled`); an upload's content is not recorded already (`Unrecorded`). They are decided
here for the same reason, in commit order, counting the rows merged ahead in the same flush; the rows of an
instance whose condition fails are left out, and the writer is told so.
"""

from __future__ import annotations

import asyncio
import logging

from qure_ray.records import InstanceState
from qure_ray.storage.catalog import Batch, Catalog, Condition, now, stamp_registrations
from qure_ray.storage.schema import NEWEST_BY

logger = logging.getLogger(__name__)


STAMPED = ("instances", "events", "results")
"""The tables whose `NEWEST_BY` column the committer stamps on every row: an instance's content (two uploads of
one UID through ingress replicas whose clocks disagree), its state, and its result (written by the job manager,
and at ingest for what no use case reads). Webhooks are stamped only when new (`stamp_registrations`)."""


class GroupCommitter:
    def __init__(self, catalog: Catalog, *, interval_s: float = 0.02) -> None:
        self.catalog = catalog
        self.interval_s = interval_s
        self._pending: list[tuple[Batch, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = 0

    async def write(self, batch: Batch) -> bool:
        """Returns once the batch is durable and visible: True, or False when a condition (`Batch.only_if`)
        did not hold and the rows it drops for that instance were left out."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_until_empty())
        return await future

    async def _flush_until_empty(self) -> None:
        while self._pending:
            if self.interval_s:
                await asyncio.sleep(self.interval_s)
            waiting, self._pending = self._pending, []
            try:
                merged, outcomes = self._merge(waiting)
                if len(merged):
                    arrows = await asyncio.to_thread(self.catalog.persist, merged)
                    self.catalog.apply(arrows)
            except Exception as exc:  # every writer of this flush learns of the failure
                logger.error("catalog flush of %d batches failed: %s", len(waiting), exc)
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.flushes += 1
            for (_, future), held in zip(waiting, outcomes, strict=True):
                if not future.done():  # its writer may have been cancelled meanwhile
                    future.set_result(held)

    def _merge(self, waiting: list[tuple[Batch, asyncio.Future[bool]]]) -> tuple[Batch, list[bool]]:
        """The rows to write, conditions applied in arrival order, stamped; and per batch whether all its
        conditions held."""
        merged, outcomes, ahead = Batch(), [], _RowsAhead()
        for batch, _ in waiting:
            failed = [c for c in batch.only_if if not self._holds(c, ahead)]
            kept = batch if not failed else _without(batch, failed)
            merged.extend(kept)
            ahead.note(kept)
            outcomes.append(not failed)
        for table in STAMPED:
            for row in merged.rows.get(table, []):
                row[NEWEST_BY[table]] = now()
        stamp_registrations(merged)
        return merged, outcomes

    def _holds(self, condition: Condition, ahead: _RowsAhead) -> bool:
        """Whether `condition` holds for the instance's content and state, counting the rows of this flush
        merged ahead of it (an upload and a result may share a flush)."""
        key = (condition.source, condition.sop_uid)
        record = self.catalog.instance(*key)
        sha256 = ahead.sha256.get(key, record.sha256 if record else None)
        state = ahead.state.get(key, record.state if record else None)
        return condition.holds(sha256, state)


def _without(batch: Batch, failed: list[Condition]) -> Batch:
    """`batch` without the rows each failed condition drops for its instance."""
    dropped = {(table, c.source, c.sop_uid) for c in failed for table in c.drops}
    return Batch(
        {
            table: [row for row in rows if (table, row.get("source"), row.get("sop_uid")) not in dropped]
            for table, rows in batch.rows.items()
        }
    )


class _RowsAhead:
    """The content and newest state per instance in rows merged into a flush so far."""

    def __init__(self) -> None:
        self.sha256: dict[tuple[str, str], str] = {}
        self.state: dict[tuple[str, str], InstanceState] = {}

    def note(self, batch: Batch) -> None:
        for row in batch.rows.get("instances", []):
            self.sha256[(row["source"], row["sop_uid"])] = row["sha256"]
        for row in batch.rows.get("events", []):
            self.state[(row["source"], row["sop_uid"])] = InstanceState(row["state"])
