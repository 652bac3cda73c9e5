"""Group commit: many concurrent writers, one Parquet segment per table per flush.

Each `write(batch)` returns once its rows are durable on the object store and visible in the catalog.
Writes that arrive while a flush is running wait for the next one, so under load a flush carries many
writers' rows and the cost of a segment write is shared.

An instance's state is its newest event, and its result its newest result row, so both are stamped here, in
commit order, as they are flushed:
their writers (ingress replicas, the job manager) may run on machines whose clocks disagree, and a `done`
stamped by a clock a second behind the ingress's `queued` would have lost to it. Commit order is the order
of cause and effect: each step of an instance is written, and waited for, before the next one starts.
"""

from __future__ import annotations

import asyncio
import logging

from qure_ray.storage.catalog import Batch, Catalog, now

logger = logging.getLogger(__name__)


STAMPED = (("events", "event_at"), ("results", "finished_at"))
"""What decides which row of a key is the newest: an instance's state, and its result (written by the job
manager, and at ingest for what no use case reads)."""


class GroupCommitter:
    def __init__(self, catalog: Catalog, *, interval_s: float = 0.02) -> None:
        self.catalog = catalog
        self.interval_s = interval_s
        self._pending: list[tuple[Batch, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = 0

    async def write(self, batch: Batch) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_until_empty())
        await future

    async def _flush_until_empty(self) -> None:
        while self._pending:
            if self.interval_s:
                await asyncio.sleep(self.interval_s)
            waiting, self._pending = self._pending, []
            merged = Batch()
            for batch, _ in waiting:
                merged.extend(batch)
            for table, column in STAMPED:
                for row in merged.rows.get(table, []):
                    row[column] = now()
            try:
                arrows = await asyncio.to_thread(self.catalog.persist, merged)
                self.catalog.apply(arrows)
            except Exception as exc:  # every writer of this flush learns of the failure
                logger.error("catalog flush of %d rows failed: %s", len(merged), exc)
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.flushes += 1
            for _, future in waiting:
                if not future.done():
                    future.set_result(None)
