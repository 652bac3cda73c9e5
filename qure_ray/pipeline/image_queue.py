"""`ImageQueue`: the priority queue of instances waiting for the job manager, as a Serve deployment.

Its content is a cache of the catalog: `rebuild()` re-reads every unfinished instance, so a restart of
this actor, of the job manager or of the whole deployment loses nothing.
"""

from __future__ import annotations

import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from qure_ray import metrics
from qure_ray.config import BACKGROUND_LOGGING
from qure_ray.pipeline.priority_queue import UniquePriorityQueue
from qure_ray.records import InstanceRef
from qure_ray.replica_logging import log_to_replica_file

logger = logging.getLogger(__name__)


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=4096,
    ray_actor_options={"num_cpus": 0},
    logging_config=BACKGROUND_LOGGING,
)
class ImageQueue:
    def __init__(self, catalog: DeploymentHandle) -> None:
        log_to_replica_file()
        self.catalog = catalog
        self.queue = UniquePriorityQueue()

    async def put(self, ref: InstanceRef) -> bool:
        added = await self.queue.put(ref)
        metrics.gauge("qure_queue_depth").set(len(self.queue))
        return added

    async def get(self, timeout_s: float) -> InstanceRef | None:
        ref = await self.queue.get(timeout_s=timeout_s)
        metrics.gauge("qure_queue_depth").set(len(self.queue))
        return ref

    async def depth(self) -> int:
        return len(self.queue)

    async def rebuild(self, in_flight: list[tuple[str, str]]) -> int:
        """Enqueue every unfinished instance of the catalog that is not being worked on; returns how many."""
        busy = set(in_flight)
        added = 0
        for record in await self.catalog.unfinished.remote():
            if (record.source, record.sop_uid) not in busy and await self.queue.put(record.ref):
                added += 1
        metrics.gauge("qure_queue_depth").set(len(self.queue))
        if added:
            logger.info("queue rebuilt from the catalog: %d instance(s) re-queued", added)
        return added
