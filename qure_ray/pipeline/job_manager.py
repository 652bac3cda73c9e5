"""`JobManager`: takes queued instances and runs their workflow, recording every state change first.

Workflow of one instance (use case `qxr`):
    processing → route → preprocess (Ray task, CPU) → infer (model deployment) → result → done
Unsupported images end as `unsupported`, undecodable ones as `unusable`; anything else that fails is
retried with exponential backoff and ends as `failed` with its reason after the last attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ray import serve
from ray.serve.handle import DeploymentHandle

from qure_ray.errors import InvalidInstanceError
from qure_ray.models.card import CARD_FILE, ModelCard
from qure_ray.models.registry import load_registry
from qure_ray.models.verdict import verdict
from qure_ray.pipeline.tasks import build_outputs, preprocess
from qure_ray.records import InstanceRecord, InstanceRef, InstanceState, ResultRecord, UseCase
from qure_ray.routing import InstanceFacts, load_routing
from qure_ray.routing.quality import blank_reason, unusable_reason
from qure_ray.storage.catalog import Batch, event_row, now
from qure_ray.storage.object_store import StoreLocation

logger = logging.getLogger(__name__)
T = TypeVar("T")

RESYNC_INTERVAL_S = 30.0
RETRY_BASE_DELAY_S = 0.5


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=64,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
class JobManager:
    def __init__(
        self,
        *,
        catalog: DeploymentHandle,
        queue: DeploymentHandle,
        models: dict[str, DeploymentHandle],
        location: StoreLocation,
        models_dir: str,
        routing_file: str,
        max_concurrent_jobs: int,
        max_attempts: int,
    ) -> None:
        self.catalog = catalog
        self.queue = queue
        self.models = {UseCase(name): handle for name, handle in models.items()}
        self.cards: dict[UseCase, ModelCard] = load_registry(Path(models_dir), verify_weights=False)
        self.routing = load_routing(Path(routing_file))
        self.location = location
        self.max_attempts = max_attempts
        self.slots = asyncio.Semaphore(max_concurrent_jobs)
        self.in_flight: set[tuple[str, str]] = set()
        self.processed = 0
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def check_health(self) -> None:
        """Serve's health check: the work loop must be alive."""
        if self._loop.done():
            error = self._loop.exception() if not self._loop.cancelled() else None
            raise RuntimeError(f"job manager loop stopped: {error!r}")

    async def _run(self) -> None:
        last_resync = -RESYNC_INTERVAL_S
        while True:
            if time.monotonic() - last_resync >= RESYNC_INTERVAL_S:
                try:
                    await self.queue.rebuild.remote(sorted(self.in_flight))
                    last_resync = time.monotonic()
                except Exception as exc:  # catalog not ready yet: try again shortly, never give up
                    logger.warning("queue resync failed, retrying: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
            await self.slots.acquire()
            try:
                ref: InstanceRef | None = await self.queue.get.remote(1.0)
            except Exception as exc:
                logger.warning("queue unavailable, retrying: %s", exc)
                self.slots.release()
                await asyncio.sleep(1.0)
                continue
            key = (ref.source, ref.sop_uid) if ref else None
            if ref is None or key in self.in_flight:
                self.slots.release()
                continue
            self.in_flight.add(key)  # type: ignore[arg-type]
            task = asyncio.get_running_loop().create_task(self._process(ref))
            task.add_done_callback(lambda _, key=key: self._finished(key))  # type: ignore[misc]

    def _finished(self, key: tuple[str, str]) -> None:
        self.in_flight.discard(key)
        self.processed += 1
        self.slots.release()

    async def _process(self, ref: InstanceRef) -> None:
        try:
            record = await self.catalog.instance.remote(ref.source, ref.sop_uid)
            if record is None or record.state.is_final:
                return
            await self._write(event_row(ref.source, ref.sop_uid, InstanceState.PROCESSING))
            result = await self._workflow(record)
        except Exception as exc:  # the catalog itself failed: the instance stays unfinished, resync retries
            logger.error("instance %s of %s could not be started: %s", ref.sop_uid, ref.source, exc)
            return
        batch = Batch()
        batch.add("results", {**result.to_row(), "finished_at": now()})
        batch.add("events", event_row(ref.source, ref.sop_uid, result.state, result.reason))
        try:
            await self._write(batch)
        except Exception as exc:
            logger.error("result of %s (%s) could not be recorded, resync retries: %s", ref.sop_uid, ref.source, exc)
            return
        logger.info("instance %s of %s: %s", ref.sop_uid, ref.source, result.state.value)

    async def _workflow(self, record: InstanceRecord) -> ResultRecord:
        decision = self.routing.route(InstanceFacts.of(record, source=record.source))
        usecase = decision.usecase
        base: dict[str, Any] = {"source": record.source, "sop_uid": record.sop_uid, "usecase": usecase}
        if usecase not in self.cards:
            return ResultRecord(**base, state=InstanceState.UNSUPPORTED, reason=decision.reason)
        card = self.cards[usecase]
        reason = unusable_reason(
            usecase=usecase, view_position=record.view_position, rows=record.rows, columns=record.columns
        )
        if reason is not None:
            return await self._with_assets(
                ResultRecord(**base, state=InstanceState.UNUSABLE, reason=reason), record, card
            )
        timings: dict[str, float] = {"queue": max(0.0, (now() - record.received_at).total_seconds())}
        try:
            started = time.perf_counter()
            image = await self._attempts(
                "preprocess",
                lambda: preprocess.remote(self.location, record.object_key, card.input.size, card.preprocessing.window),
            )
            timings["preprocess"] = time.perf_counter() - started
            if (reason := blank_reason(image)) is not None:
                unusable = ResultRecord(**base, state=InstanceState.UNUSABLE, reason=reason)
                return await self._with_assets(unusable, record, card)
            started = time.perf_counter()
            prediction = await self._attempts("inference", lambda: self.models[usecase].predict.remote(image))
            timings["inference"] = time.perf_counter() - started
        except InvalidInstanceError as exc:
            return ResultRecord(**base, state=InstanceState.UNUSABLE, reason=str(exc))
        except Exception as exc:
            return ResultRecord(**base, state=InstanceState.FAILED, reason=f"{type(exc).__name__}: {exc}")
        triage, decisions = verdict(card, prediction.scores)
        result = ResultRecord(
            **base,
            state=InstanceState.DONE,
            triage_status=triage,
            scores=prediction.scores,
            decisions=decisions,
            model=prediction.model,
        )
        try:
            started = time.perf_counter()
            assets = await self._attempts(
                "outputs",
                lambda: build_outputs.remote(
                    self.location, record.object_key, result, str(card.folder / CARD_FILE), prediction.heatmaps
                ),
            )
            timings["outputs"] = time.perf_counter() - started
        except Exception as exc:
            return ResultRecord(**base, state=InstanceState.FAILED, reason=f"outputs: {type(exc).__name__}: {exc}")
        return dataclasses.replace(
            result, assets=assets, timings_s={name: round(value, 4) for name, value in timings.items()}
        )

    async def _with_assets(self, result: ResultRecord, record: InstanceRecord, card: ModelCard) -> ResultRecord:
        """Assets that say why an image is unusable; without them if they cannot be made (the reason stays)."""
        try:
            assets = await self._attempts(
                "outputs",
                lambda: build_outputs.remote(
                    self.location, record.object_key, result, str(card.folder / CARD_FILE), None
                ),
            )
        except Exception as exc:
            logger.warning("no assets for unusable %s: %s", record.sop_uid, exc)
            return result
        return dataclasses.replace(result, assets=assets)

    async def _attempts(self, stage: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` up to max_attempts times with exponential backoff; bad input is never retried."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await call()
            except Exception as exc:
                cause = _unwrap(exc)
                if isinstance(cause, InvalidInstanceError) or attempt == self.max_attempts:
                    raise cause from exc
                delay = RETRY_BASE_DELAY_S * 2 ** (attempt - 1)
                logger.warning("%s attempt %d failed (%s); retrying in %.1fs", stage, attempt, cause, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _write(self, batch_or_row: Batch | dict[str, Any]) -> None:
        if isinstance(batch_or_row, dict):
            batch = Batch()
            batch.add("events", batch_or_row)
        else:
            batch = batch_or_row
        await self.catalog.write.remote(batch)


def _unwrap(exc: BaseException) -> BaseException:
    """The user exception inside a Ray task/actor error (RayTaskError wraps it with `.cause`)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
