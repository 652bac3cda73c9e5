"""`Platform`: what the HTTP layer needs from the rest of the system, and its Ray-backed implementation."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ray.serve.handle import DeploymentHandle

from qure_ray.api.coalesce import Coalescer
from qure_ray.config import Settings
from qure_ray.errors import OverloadedError
from qure_ray.records import InstanceRecord, ResultRecord, SeriesStart, SeriesTrigger, Webhook
from qure_ray.routing import Router
from qure_ray.storage.catalog import Batch, received_rows, webhook_row
from qure_ray.storage.lookup import ResultLookup
from qure_ray.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

DEPTH_CACHE_S = 0.5
WAKE_TIMEOUT_S = 1.0
"""How long `GET /compute` waits for the job manager to take its wake; its once-a-second round is the fallback."""
READY_PROBE_KEY = "catalog/ready-probe"
"""A key that need not exist: asking for it proves the object store answers."""


class Platform(Protocol):
    settings: Settings
    store: ObjectStore
    router: Router

    async def find_instance(self, source: str, sop_uid: str) -> InstanceRecord | None: ...
    async def instances_of_series(self, source: str, series_uid: str) -> list[InstanceRecord]: ...
    async def lookup_result(self, source: str, uid: str) -> ResultLookup: ...
    async def start_series(self, source: str, series_uid: str) -> SeriesStart: ...
    async def record_and_enqueue(self, record: InstanceRecord) -> bool: ...
    async def record_settled(self, record: InstanceRecord, result: ResultRecord) -> bool: ...
    async def webhook(self, source: str) -> Webhook | None: ...
    async def set_webhook(self, source: str, url: str, secret: str, *, active: bool) -> None: ...
    async def log_ingest(self, batch: Batch) -> None: ...
    async def check_capacity(self) -> None: ...
    async def ready(self) -> bool: ...


@dataclass
class RayPlatform:
    """The platform as seen from an ingress replica: handles to the catalog, queue, jobs and models."""

    settings: Settings
    store: ObjectStore
    router: Router
    catalog: DeploymentHandle
    queue: DeploymentHandle
    jobs: DeploymentHandle
    models: dict[str, DeploymentHandle]
    extra_health: list[DeploymentHandle] = field(default_factory=list)
    """Further deployments (the DIMSE gateway) whose `check_health` must pass for `/ready`."""
    _queue_depth: int = 0
    _depth_checked_at: float = -1e9
    _lookups: Coalescer[tuple[str, str], ResultLookup] = field(init=False, repr=False)
    """`GET /results` lookups that arrive together go to the catalog in one call (see `Coalescer`)."""

    def __post_init__(self) -> None:
        self._lookups = Coalescer(self._lookup_many)

    @classmethod
    def from_args(
        cls,
        settings_args: dict[str, Any],
        *,
        catalog: DeploymentHandle,
        queue: DeploymentHandle,
        jobs: DeploymentHandle,
        models: dict[str, DeploymentHandle] | None = None,
        extra_health: list[DeploymentHandle] | None = None,
    ) -> RayPlatform:
        """Built inside a replica from the settings the app builder validated."""
        settings = Settings.load(settings_args, {})
        return cls(
            settings=settings,
            store=settings.store_location.open(),
            router=Router.load(settings.routing_path, settings.models_path),
            catalog=catalog,
            queue=queue,
            jobs=jobs,
            models=models or {},
            extra_health=extra_health or [],
        )

    async def find_instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        record: InstanceRecord | None = await self.catalog.instance.remote(source, sop_uid)
        return record

    async def instances_of_series(self, source: str, series_uid: str) -> list[InstanceRecord]:
        records: list[InstanceRecord] = await self.catalog.series_instances.remote(source, series_uid)
        return records

    async def lookup_result(self, source: str, uid: str) -> ResultLookup:
        return await self._lookups((source, uid))

    async def _lookup_many(self, requests: list[tuple[str, str]]) -> list[ResultLookup | Exception]:
        found: list[ResultLookup | Exception] = await self.catalog.lookup_results.remote(requests)
        return found

    async def start_series(self, source: str, series_uid: str) -> SeriesStart:
        outcome: SeriesStart = await self.catalog.start_series.remote(source, series_uid, SeriesTrigger.COMPUTE)
        if outcome is SeriesStart.STARTED:
            try:
                async with asyncio.timeout(WAKE_TIMEOUT_S):  # a job manager being replaced must not hold the reply
                    await self.jobs.wake_series.remote()
            except Exception as exc:  # the start is durable: the job manager's next round finds it
                logger.warning("job manager not woken for series %s: %s", series_uid, exc)
        return outcome

    async def record_and_enqueue(self, record: InstanceRecord) -> bool:
        """Durable first (catalog row + `queued` event), then the queue; a lost enqueue is resynced. False when
        the instance already held this content (another upload of it recorded it first): nothing written."""
        recorded: bool = await self.catalog.write.remote(received_rows(record))
        if recorded:
            await self.queue.put.remote(record.ref)
        return recorded

    async def record_settled(self, record: InstanceRecord, result: ResultRecord) -> bool:
        """A stored instance and its final result in one durable write: the queue never sees it. False as for
        `record_and_enqueue`."""
        recorded: bool = await self.catalog.write.remote(received_rows(record, settled=result))
        return recorded

    async def webhook(self, source: str) -> Webhook | None:
        webhook: Webhook | None = await self.catalog.webhook.remote(source)
        return webhook

    async def set_webhook(self, source: str, url: str, secret: str, *, active: bool) -> None:
        sealed = self.settings.secret_sealer.seal(secret, source=source)
        await self.catalog.write.remote(webhook_row(source, url, sealed, active=active))

    async def log_ingest(self, batch: Batch) -> None:
        await self.catalog.write.remote(batch)

    async def check_capacity(self) -> None:
        """Raise `OverloadedError` when the queue is over its depth (checked at most every 0.5 s)."""
        now = time.monotonic()
        if now - self._depth_checked_at > DEPTH_CACHE_S:
            self._queue_depth = await self.queue.depth.remote()
            self._depth_checked_at = now
        if self._queue_depth >= self.settings.max_queue_depth:
            raise OverloadedError(queue_depth=self._queue_depth, max_queue_depth=self.settings.max_queue_depth)

    async def ready(self) -> bool:
        await asyncio.to_thread(self.store.exists, READY_PROBE_KEY)  # raises when the store is unreachable
        await self.catalog.states.remote()
        await self.queue.depth.remote()
        await self.jobs.check_health.remote()
        for handle in self.models.values():
            await handle.info.remote()
        for handle in self.extra_health:
            await handle.check_health.remote()
        return True
