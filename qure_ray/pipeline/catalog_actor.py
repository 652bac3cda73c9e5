"""`CatalogActor`: the one writer of the catalog, as a single-replica Serve deployment.

Ingress replicas and the job manager send it `Batch`es; group commit turns many concurrent writes into
one Parquet segment per flush. Reads are served from the in-memory DuckDB and never wait for a flush.
"""

from __future__ import annotations

import asyncio
import logging

import ray
from ray import serve

from qure_ray import metrics
from qure_ray.config import BACKGROUND_LOGGING
from qure_ray.pipeline.announcements import LONG_POLL_S, Announcements
from qure_ray.pipeline.replicas import deployment_of, live_other_replicas, this_replica
from qure_ray.records import (
    InstanceRecord,
    InstanceState,
    Notification,
    ResultRecord,
    SeriesRef,
    SeriesStart,
    SeriesTrigger,
    Webhook,
)
from qure_ray.replica_logging import log_to_replica_file
from qure_ray.storage.catalog import Batch, Catalog, now, series_start_row, webhook_row
from qure_ray.storage.group_commit import GroupCommitter
from qure_ray.storage.lookup import ResultLookup, lookup_results
from qure_ray.storage.object_store import StoreLocation
from qure_ray.storage.reconcile import remove_orphans
from qure_ray.storage.schema import TABLES
from qure_ray.storage.writer_lease import RENEW_S, LeaseHolder, WriterLease

RECONCILE_INTERVAL_S = 3600.0
STATES_INTERVAL_S = 5.0
REFRESH_INTERVAL_S = 2.0
MERGE_INTERVAL_S = 60.0

logger = logging.getLogger(__name__)


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=4096,
    ray_actor_options={"num_cpus": 0},
    logging_config=BACKGROUND_LOGGING,
    health_check_period_s=5,
)
class CatalogActor:
    def __init__(self, location: StoreLocation, flush_interval_s: float) -> None:
        log_to_replica_file()
        self.store = location.open()
        self.lease = WriterLease(self.store, _this_replica())
        self.lease.acquire()  # before loading: a deployment already writing here makes this one refuse to start
        self.catalog = Catalog(self.store)
        self.committer = GroupCommitter(self.catalog, interval_s=flush_interval_s)
        self.announcements = Announcements()
        self._starting: set[tuple[str, str]] = set()
        self._sole_writer = asyncio.Event()
        """Set once no other catalog replica (the one a rolling update replaces) can still write."""
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._reconcile_forever()),
            loop.create_task(self._report_states()),
            loop.create_task(self._refresh_while_replacing()),
            loop.create_task(self._merge_segments_forever()),
            loop.create_task(self._renew_lease_forever()),
        ]

    async def __del__(self) -> None:
        """Serve's graceful shutdown: hand the writer lease back, so that a start elsewhere need not wait."""
        for task in self._background:
            task.cancel()
        try:
            await asyncio.to_thread(self.lease.release)
        except Exception as exc:  # it goes stale on its own
            logger.warning("releasing the catalog's writer lease failed: %s", exc)

    async def _renew_lease_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            try:
                await asyncio.to_thread(self.lease.renew)
            except Exception as exc:  # the store may be briefly unavailable; the lease goes stale only after STALE_S
                logger.warning("renewing the catalog's writer lease failed: %s", exc)

    async def _reconcile_forever(self) -> None:
        """Remove orphaned originals at start-up and then hourly (see `qure_ray.storage.reconcile`): once this is
        the only catalog replica and has every segment the replaced one wrote, or it would take the originals
        those segments name for orphans."""
        await self._sole_writer.wait()
        while True:
            try:
                await remove_orphans(self.store, self.catalog)
            except Exception as exc:  # the store may be briefly unavailable; try again next round
                logger.error("orphan reconciliation failed: %s", exc)
            await asyncio.sleep(RECONCILE_INTERVAL_S)

    async def _refresh_while_replacing(self) -> None:
        """During a rolling update the replica this one replaces still writes while its job manager drains:
        pick up its segments for as long as it is alive, and once more after it is gone (its last upload may
        have finished after this one loaded). Only then may merging start: two writers would merge the same
        segments."""
        announced = False
        while others := live_other_replicas(self.lease.holder.replica):
            if not announced:
                logger.info("catalog replica(s) %s still running: loading their segments", ", ".join(others))
                announced = True
            await self._load_foreign_segments()
            await asyncio.sleep(REFRESH_INTERVAL_S)
        while not await self._load_foreign_segments(whole=True):
            await asyncio.sleep(REFRESH_INTERVAL_S)
        self._sole_writer.set()

    async def _load_foreign_segments(self, *, whole: bool = False) -> bool:
        """Load segments another writer added; False when the store could not be read (try again later)."""
        try:
            found = await asyncio.to_thread(self.catalog.foreign_segments, whole=whole)
            for table, keys in found.items():
                loaded = await asyncio.to_thread(self.catalog.read_segments, table, keys)
                self.catalog.insert_segments(table, keys, loaded)
                logger.info("loaded %d %s segment(s) written by the replica this one replaces", len(keys), table)
        except Exception as exc:  # the store may be briefly unavailable
            logger.warning("catalog refresh failed: %s", exc)
            return False
        return True

    async def _merge_segments_forever(self) -> None:
        """Keep each table at a few segments while running (see `qure_ray.storage.merging`), once this is the
        only catalog replica."""
        await self._sole_writer.wait()
        while True:
            for table in TABLES:
                try:
                    replaced = await asyncio.to_thread(self.catalog.merge_segments, table)
                except Exception as exc:  # the store may be briefly unavailable; try again next round
                    logger.warning("merging %s segments failed: %s", table, exc)
                    continue
                if replaced:
                    logger.info("merged %d %s segments", replaced, table)
            await asyncio.sleep(MERGE_INTERVAL_S)

    async def _report_states(self) -> None:
        """The `qure_instances` gauge: how many instances are in each state, every few seconds."""
        while True:
            counts = self.catalog.states()
            for state in InstanceState:
                metrics.gauge("qure_instances").set(counts.get(state.value, 0), tags={"state": state.value})
            await asyncio.sleep(STATES_INTERVAL_S)

    async def write(self, batch: Batch) -> bool:
        """Returns once the batch is durable on the object store and visible to reads: True, or False when a
        condition (`Batch.only_if`) did not hold and the rows it drops for that instance were left out. A batch
        with a result for a source with a webhook is announced to the notifier (`announced_after`)."""
        written = await self.committer.write(batch)
        if any(self.catalog.webhook(row["source"]) for row in batch.rows.get("results", [])):
            self.announcements.note()
        return written

    async def announced_after(self, seen: int) -> int:
        """The notifier's long poll: the count of announced writes once it differs from `seen`, or after
        `LONG_POLL_S`."""
        return await self.announcements.after(seen, LONG_POLL_S)

    async def instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        return self.catalog.instance(source, sop_uid)

    async def result(self, source: str, sop_uid: str) -> ResultRecord | None:
        return self.catalog.result(source, sop_uid)

    async def lookup_results(self, requests: list[tuple[str, str]]) -> list[ResultLookup | Exception]:
        """What `GET /results` answers for each (source, uid): an ingress replica sends the lookups that arrive
        together (`qure_ray.api.coalesce`)."""
        return lookup_results(self.catalog, requests)

    async def unfinished(self) -> list[InstanceRecord]:
        return self.catalog.unfinished()

    async def states(self) -> dict[str, int]:
        return self.catalog.states()

    async def series_instances(self, source: str, series_uid: str) -> list[InstanceRecord]:
        return self.catalog.series_instances(source, series_uid)

    async def start_series(self, source: str, series_uid: str, trigger: SeriesTrigger) -> SeriesStart:
        """Record that a series starts, once: concurrent callers (ingress replicas, the quiet-period
        check) see `ALREADY_STARTED` while the first one's row is being written."""
        key = (source, series_uid)
        if key in self._starting or self.catalog.series_started(source, series_uid):
            return SeriesStart.ALREADY_STARTED
        if not self.catalog.has_series(source, series_uid):
            return SeriesStart.UNKNOWN
        self._starting.add(key)
        try:
            await self.committer.write(series_start_row(source, series_uid, trigger))
        finally:
            self._starting.discard(key)
        return SeriesStart.STARTED

    async def series_due(self, quiet_period_s: float) -> list[SeriesRef]:
        return self.catalog.series_due(quiet_period_s=quiet_period_s, at=now())

    async def pending_series(self) -> list[SeriesRef]:
        return self.catalog.pending_series()

    async def late_slices(self) -> list[InstanceRecord]:
        return self.catalog.late_slices()

    async def webhook(self, source: str) -> Webhook | None:
        return self.catalog.webhook(source)

    async def stored_webhook_secrets(self) -> dict[str, str]:
        """Each source's stored (sealed) webhook secret, from its newest webhook row."""
        return {row["source"]: row["secret"] for row in self.catalog.webhook_rows()}

    async def replace_webhook_secret(self, source: str, stored: str, replacement: str) -> bool:
        """Store `replacement` (the same secret sealed again) if the source's newest row still holds `stored`;
        its URL, state and registration time stay. False when the source registered anew meanwhile."""
        row = self.catalog.newest_webhook_row(source)
        if row is None or row["secret"] != stored:
            return False
        batch = webhook_row(source, row["url"], replacement, active=row["active"], registered_at=row["registered_at"])
        await self.committer.write(batch)
        return True

    async def undelivered(self, limit: int, exclude: frozenset[str] = frozenset()) -> list[Notification]:
        return self.catalog.undelivered(limit=limit, exclude=exclude)


def _this_replica() -> LeaseHolder:
    replica = this_replica()
    return LeaseHolder(
        cluster=ray.get_runtime_context().gcs_address, deployment=deployment_of(replica), replica=replica
    )
