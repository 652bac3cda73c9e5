"""`JobManager`: takes queued instances and runs their workflow, recording every state change first.

Workflow of one instance (use case `qxr`):
    processing → route → preprocess (Ray task, CPU) → infer (model deployment) → result → done
Unsupported images end as `unsupported`, undecodable ones as `unusable`; anything else that fails is
retried with exponential backoff and ends as `failed` with its reason after the last attempt.

Workflow of a series (use case `qer`, head CT): each slice is routed and `held`; once the series starts
(`GET /compute/{SeriesInstanceUID}`, or no new slice for the quiet period) and none of its slices is still
being routed, every held slice is preprocessed and read by the model (Serve batches them), the series
scores are the maximum over slices, and the outputs show the key slices. One result for the series;
each slice ends `done` (or `failed`) with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from ray import serve
from ray.serve.handle import DeploymentHandle

from qure_ray import metrics
from qure_ray.config import BACKGROUND_LOGGING
from qure_ray.egress import IPNetwork
from qure_ray.errors import InvalidInstanceError
from qure_ray.models.card import CARD_FILE, ModelCard
from qure_ray.models.registry import load_registry
from qure_ray.models.verdict import check_prediction, verdict
from qure_ray.pipeline.notifier import WebhookNotifier
from qure_ray.pipeline.replicas import live_other_replicas, this_replica
from qure_ray.pipeline.tasks import build_outputs, preprocess, preprocess_slices
from qure_ray.ray_failures import is_platform_failure
from qure_ray.records import (
    UNFINISHED_STATES,
    InstanceRecord,
    InstanceRef,
    InstanceState,
    Prediction,
    ResultRecord,
    SeriesRef,
    SeriesTrigger,
    UseCase,
    slice_key,
    slice_of,
)
from qure_ray.replica_logging import log_to_replica_file
from qure_ray.routing import InstanceFacts, Router, load_routing
from qure_ray.routing.quality import blank_reason, unusable_reason
from qure_ray.sealing import SecretSealer
from qure_ray.storage.catalog import Batch, Unsettled, event_row, now, result_row, settled_rows
from qure_ray.storage.object_store import StoreLocation

logger = logging.getLogger(__name__)
T = TypeVar("T")

RESYNC_INTERVAL_S = 30.0
MAX_CONTENTS_PER_RUN = 8
"""How many contents of one instance a run reads, one after another, as uploads replace it while it runs."""
RETRY_BASE_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 30.0
SERIES_POLL_S = 1.0
"""Series rounds without a wake: the quiet period's clock, and a safety net for a lost wake."""
MIN_SERIES_ROUND_GAP_S = 0.25
"""Woken rounds come at most this often: each asks the catalog three questions, and the slices of a started series
still being routed wake one each."""
MAX_SERIES_AT_ONCE = 2
MAX_SLICES_IN_FLIGHT = 32
DRAIN_TIMEOUT_S = 60.0
"""On shutdown (a redeploy, `serve shutdown`), in-flight work gets this long to finish before it is left to
the next job manager (it is still `processing`/`held` in the catalog, so it is re-queued)."""
PREDECESSOR_WAIT_S = DRAIN_TIMEOUT_S + 30
"""How long a new job manager waits for the one it replaces to finish draining (see `_after_predecessor`)."""
PREDECESSOR_POLL_S = 1.0


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=64,
    ray_actor_options={"num_cpus": 0},
    logging_config=BACKGROUND_LOGGING,
    graceful_shutdown_timeout_s=DRAIN_TIMEOUT_S + 10,
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
        series_quiet_period_s: float,
        results_base_url: str,
        webhook_max_attempts: int,
        webhook_networks: tuple[IPNetwork, ...],
        secret_sealer: SecretSealer,
        task_resources: dict[str, float],
    ) -> None:
        log_to_replica_file()
        self.catalog = catalog
        self.queue = queue
        self.models = {UseCase(name): handle for name, handle in models.items()}
        self.cards: dict[UseCase, ModelCard] = load_registry(Path(models_dir), verify_weights=False)
        self.router = Router(load_routing(Path(routing_file)), frozenset(self.cards))
        self.location = location
        self.max_attempts = max_attempts
        self.slots = asyncio.Semaphore(max_concurrent_jobs)
        self.in_flight: set[tuple[str, str]] = set()
        self.run_again: dict[tuple[str, str], InstanceRef] = {}
        """Instances queued again while in flight (new content uploaded over one that runs)."""
        self.processed = 0
        self.series_quiet_period_s = series_quiet_period_s
        self.task_resources = task_resources
        self.series_slots = asyncio.Semaphore(MAX_SERIES_AT_ONCE)
        self._series_woken = asyncio.Event()
        self.series_awaiting_slices: set[SeriesRef] = set()
        """Started series a round left because a slice was still being routed: holding one wakes the loop."""
        self.series_in_flight: set[SeriesRef] = set()
        self._work: set[asyncio.Task[None]] = set()
        self.notifier = WebhookNotifier(
            catalog,
            results_base_url=results_base_url,
            max_attempts=webhook_max_attempts,
            allowed_networks=webhook_networks,
            secret_sealer=secret_sealer,
        )
        loop = asyncio.get_running_loop()
        self._predecessor_gone = loop.create_task(self._wait_for_predecessor())
        self._loops = [
            loop.create_task(self._after_predecessor(self._run())),
            loop.create_task(self._after_predecessor(self._series_loop())),
            loop.create_task(self._after_predecessor(self.notifier.run())),
        ]

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    async def __del__(self) -> None:
        """Serve's graceful shutdown: take no new work, let in-flight instances and series finish."""
        for loop in self._loops:
            loop.cancel()
        if self._work:
            logger.info("draining: waiting for %d in-flight job(s)", len(self._work))
            _, unfinished = await asyncio.wait(set(self._work), timeout=DRAIN_TIMEOUT_S)
            if unfinished:
                logger.warning("%d job(s) left to the next job manager (re-queued from the catalog)", len(unfinished))

    async def _wait_for_predecessor(self) -> None:
        """A rolling update starts this replica while the one it replaces drains its in-flight work. Until that
        one is gone, re-queueing the catalog's unfinished instances (its in-flight ones among them), running
        pending series or delivering webhooks here would do its work a second time: two results, two webhooks."""
        own = this_replica()
        deadline = time.monotonic() + PREDECESSOR_WAIT_S
        announced = False
        while (others := live_other_replicas(own)) and time.monotonic() < deadline:
            if not announced:
                logger.info("job manager %s still draining: starting work once it is gone", ", ".join(others))
                announced = True
            await asyncio.sleep(PREDECESSOR_POLL_S)
        if others:
            logger.warning(
                "job manager %s still alive after %.0f s: starting anyway", ", ".join(others), PREDECESSOR_WAIT_S
            )

    async def _after_predecessor(self, work: Coroutine[Any, Any, None]) -> None:
        await asyncio.shield(self._predecessor_gone)
        await work

    async def check_health(self) -> None:
        """Serve's health check: the work loops must be alive."""
        for task in self._loops:
            if task.done():
                error = task.exception() if not task.cancelled() else None
                raise RuntimeError(f"job manager loop stopped: {error!r}")

    async def _run(self) -> None:
        """Take instances off the queue. The queue is re-filled from the catalog (what a lost enqueue, a
        restarted queue or an early return of `_process` left unfinished) at start, and then only when it ran
        dry: during a backlog that work finds nothing new, and it held the catalog actor for seconds (about
        2.5 s for 50k unfinished instances) in which uploads and lookups waited."""
        last_resync = -RESYNC_INTERVAL_S
        queue_ran_dry = True
        while True:
            if queue_ran_dry and time.monotonic() - last_resync >= RESYNC_INTERVAL_S:
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
                queue_ran_dry = True  # it may have restarted empty
                await asyncio.sleep(1.0)
                continue
            queue_ran_dry = ref is None
            if ref is None:
                self.slots.release()
                continue
            key = (ref.source, ref.sop_uid)
            if key in self.in_flight:  # new content uploaded while it runs: queued again once this run ends
                self.run_again[key] = ref
                self.slots.release()
                continue
            self.in_flight.add(key)
            task = self._track(self._process(ref))
            task.add_done_callback(lambda _, key=key: self._finished(key))  # type: ignore[misc]

    def _finished(self, key: tuple[str, str]) -> None:
        self.in_flight.discard(key)
        self.processed += 1
        self.slots.release()
        again = self.run_again.pop(key, None)
        if again is not None:  # most often already read by the run that just ended: the next run finds it final
            self._track(self._queue_again(again))

    async def _queue_again(self, ref: InstanceRef) -> None:
        try:
            await self.queue.put.remote(ref)
        except Exception as exc:  # the instance is unfinished in the catalog: a queue refill finds it
            logger.warning("instance %s of %s could not be queued again: %s", ref.sop_uid, ref.source, exc)

    async def _process(self, ref: InstanceRef) -> None:
        """Read, run and settle one instance. Its `processing` state and its result are written only if the
        instance still holds the content that was read and is not final (`Unsettled`, checked by the catalog's
        committer): new content uploaded over it while it ran (a source that may overwrite) is read and run
        instead, and an instance settled meanwhile (by ingest, or another job manager) is left as it was settled."""
        try:
            record: InstanceRecord | None = await self.catalog.instance.remote(ref.source, ref.sop_uid)
            for _ in range(MAX_CONTENTS_PER_RUN):
                if record is None or record.state not in UNFINISHED_STATES:
                    return
                unsettled = (Unsettled.of(record),)
                processing = Batch(only_if=unsettled)
                processing.add("events", event_row(ref.source, ref.sop_uid, InstanceState.PROCESSING))
                if await self._write(processing):
                    result = await self._settled_workflow(record)
                    settled = settled_rows(result)
                    settled.only_if = unsettled
                    if await self._write(settled):
                        if SeriesRef(source=record.source, series_uid=record.series_uid) in self.series_awaiting_slices:
                            self._series_woken.set()  # perhaps its last slice: the series can start now
                        _observe(result)
                        logger.info("instance %s of %s: %s", ref.sop_uid, ref.source, result.state.value)
                        return
                record = await self.catalog.instance.remote(ref.source, ref.sop_uid)
            logger.warning("instance %s of %s changed %d times while it ran: left for a refill", ref.sop_uid,
                           ref.source, MAX_CONTENTS_PER_RUN)  # fmt: skip
        except Exception as exc:  # the catalog failed: the instance stays unfinished, and a queue refill retries
            logger.error("instance %s of %s could not be run or recorded: %s", ref.sop_uid, ref.source, exc)

    async def _settled_workflow(self, record: InstanceRecord) -> ResultRecord:
        """`_workflow`, whose unforeseen errors settle the instance as failed, saying what went wrong: left
        unfinished, the resync would run it again every half minute, for ever."""
        try:
            return await self._workflow(record)
        except Exception as exc:
            if is_platform_failure(exc):
                raise  # Ray's own failure (the catalog restarting): left unfinished, a queue refill retries it
            logger.exception("instance %s of %s failed unexpectedly", record.sop_uid, record.source)
            reason = f"unexpected {type(exc).__name__}: {exc}"
            return ResultRecord.without_model(record.source, record.sop_uid, InstanceState.FAILED, reason)

    async def _workflow(self, record: InstanceRecord) -> ResultRecord:
        decision = self.router.route(InstanceFacts.of(record, source=record.source))
        usecase = decision.usecase
        base: dict[str, Any] = {"source": record.source, "sop_uid": record.sop_uid, "usecase": usecase}
        if usecase not in self.cards:
            return ResultRecord(**base, state=InstanceState.UNSUPPORTED, reason=decision.reason)
        card = self.cards[usecase]
        if usecase.per_series:
            return await self._hold(record, base)
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
                lambda: preprocess.options(resources=self.task_resources).remote(
                    self.location, record.object_key, card.input.size, card.preprocessing.windowing
                ),
            )
            timings["preprocess"] = time.perf_counter() - started
            if (reason := blank_reason(image)) is not None:
                unusable = ResultRecord(**base, state=InstanceState.UNUSABLE, reason=reason)
                return await self._with_assets(unusable, record, card)
            started = time.perf_counter()
            prediction = await self._attempts("inference", lambda: self._predict(card, usecase, image))
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
                lambda: build_outputs.options(resources=self.task_resources).remote(
                    self.location,
                    [(record.object_key, None, prediction.heatmaps)],
                    result,
                    str(card.folder / CARD_FILE),
                ),
            )
            timings["outputs"] = time.perf_counter() - started
        except Exception as exc:
            return ResultRecord(**base, state=InstanceState.FAILED, reason=f"outputs: {type(exc).__name__}: {exc}")
        return dataclasses.replace(
            result, assets=assets, timings_s={name: round(value, 4) for name, value in timings.items()}
        )

    async def _hold(self, record: InstanceRecord, base: dict[str, Any]) -> ResultRecord:
        """A slice waits for its series; one that arrives after its series was read cannot join it."""
        if await self.catalog.result.remote(record.source, record.series_uid) is not None:
            return ResultRecord(**base, state=InstanceState.UNUSABLE, reason=_late_reason(record.series_uid))
        return ResultRecord(
            **base,
            state=InstanceState.HELD,
            reason=f"waiting for series {record.series_uid} to start (GET /compute/{record.series_uid})",
        )

    # -- series ------------------------------------------------------------------------------------

    async def wake_series(self) -> None:
        """A series was started (`GET /compute`): look now, not at the next round (up to `SERIES_POLL_S` away)."""
        self._series_woken.set()

    async def _series_loop(self) -> None:
        """Start quiet series, settle late slices, and run every started series without a result. A round comes
        every `SERIES_POLL_S`, or sooner when woken: by `GET /compute`, or by a slice held of a started series
        that a round found still being routed."""
        previous = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SERIES_POLL_S):  # not `wait_for`: in 3.11 it can swallow a cancel
                    await self._series_woken.wait()
            self._series_woken.clear()
            await asyncio.sleep(max(0.0, previous + MIN_SERIES_ROUND_GAP_S - time.monotonic()))
            previous = time.monotonic()
            try:
                for due in await self.catalog.series_due.remote(self.series_quiet_period_s):
                    await self.catalog.start_series.remote(due.source, due.series_uid, SeriesTrigger.QUIET_PERIOD)
                await self._settle_late_slices()
                for series in await self.catalog.pending_series.remote():
                    if series not in self.series_in_flight:
                        self.series_in_flight.add(series)
                        task = self._track(self._process_series(series))
                        task.add_done_callback(lambda _, series=series: self.series_in_flight.discard(series))  # type: ignore[misc]
            except Exception as exc:  # the catalog is briefly unavailable: the next round retries
                logger.warning("series round failed, retrying: %s", exc)

    async def _settle_late_slices(self) -> None:
        """Slices held after their series was read are settled unusable, saying so (unless new content was
        uploaded over one meanwhile)."""
        late = await self.catalog.late_slices.remote()
        if not late:
            return
        batch = Batch(only_if=tuple(_still_held(record) for record in late))
        for record in late:
            reason = _late_reason(record.series_uid)
            batch.extend(settled_rows(ResultRecord.without_model(record.source, record.sop_uid,
                                                                 InstanceState.UNUSABLE, reason)))  # fmt: skip
        await self._write(batch)

    async def _process_series(self, series: SeriesRef) -> None:
        async with self.series_slots:
            try:
                if await self.catalog.result.remote(series.source, series.series_uid) is not None:
                    return  # settled already (a stale round, or another job manager); its late slices are settled
                instances: list[InstanceRecord] = await self.catalog.series_instances.remote(
                    series.source, series.series_uid
                )  # a slice given new content in another series has left it (`CurrentState._remove_member`)
            except Exception as exc:  # the catalog failed: the series stays pending, the next round retries
                logger.error("series %s of %s could not be read: %s", series.series_uid, series.source, exc)
                return
            if any(record.state in UNFINISHED_STATES for record in instances):
                self.series_awaiting_slices.add(series)  # slices still being routed: held, each wakes a round
                return
            self.series_awaiting_slices.discard(series)
            held = [record for record in instances if record.state is InstanceState.HELD]
            try:
                result = await self._series_workflow(series, held, instances)
            except Exception as exc:
                if is_platform_failure(exc):  # Ray's own (a replica restarting): the next round retries
                    logger.error("series %s of %s could not be run: %s", series.series_uid, series.source, exc)
                    return
                # what fails again in every round (a replica whose card differs from this one's) settles it,
                # saying why: left pending, it would be read and scored again every second, for ever
                logger.exception("series %s of %s failed unexpectedly", series.series_uid, series.source)
                reason = f"unexpected {type(exc).__name__}: {exc}"
                result = ResultRecord.without_model(series.source, series.series_uid, InstanceState.FAILED, reason)
            batch = Batch(only_if=tuple(_still_held(record) for record in held))  # a slice's new content is late
            batch.add("results", result_row(result))
            for record in held:
                reason = f"read with series {series.series_uid}" + (f": {result.reason}" if result.reason else "")
                batch.add("events", event_row(series.source, record.sop_uid, result.state, reason))
            try:
                all_slices = await self._write(batch)
            except Exception as exc:
                logger.error("result of series %s could not be recorded, retrying: %s", series.series_uid, exc)
                return
            _observe(result)
            logger.info("series %s of %s (%d slices): %s", series.series_uid, series.source, len(held), result.state)
            if not all_slices:
                logger.info("series %s of %s: slices given new content meanwhile are late", series.series_uid,
                            series.source)  # fmt: skip

    async def _series_workflow(
        self, series: SeriesRef, held: list[InstanceRecord], instances: list[InstanceRecord]
    ) -> ResultRecord:
        if not held:  # e.g. the source has not enabled the series' use case: its slices say why
            reason = next((r.reason for r in instances if r.reason), "no slice of this series can be read")
            return ResultRecord.without_model(series.source, series.series_uid, InstanceState.UNSUPPORTED, reason)
        decision = self.router.route(InstanceFacts.of(held[0], source=series.source))
        if decision.usecase not in self.cards:  # the rules or the cards changed since its slices were held
            unsupported = InstanceState.UNSUPPORTED
            return ResultRecord.without_model(series.source, series.series_uid, unsupported, decision.reason)
        usecase = decision.usecase
        card = self.cards[usecase]
        base: dict[str, Any] = {"source": series.source, "sop_uid": series.series_uid, "usecase": usecase}
        timings: dict[str, float] = {"queue": max(0.0, (now() - min(r.received_at for r in held)).total_seconds())}
        in_flight = asyncio.Semaphore(MAX_SLICES_IN_FLIGHT)
        unreadable: list[str] = []
        read_slices: dict[str, Prediction] = {}

        def unusable(key: str, reason: str) -> None:
            logger.warning("slice %s of series %s is unusable: %s", key, series.series_uid, reason)
            unreadable.append(reason)

        async def read(record: InstanceRecord) -> None:
            """One instance in flight: its preprocessing, then its slices through the model, so that preprocessing
            and inference overlap across instances. Each frame is a slice (an enhanced CT holds the series)."""
            async with in_flight:
                try:
                    images, unreadable_frames = await self._slices_of(card, record)
                except InvalidInstanceError as exc:
                    unusable(record.sop_uid, str(exc))
                    return
                numbers = [None] if len(images) == 1 else list(range(1, len(images) + 1))
                frames_in_flight = asyncio.Semaphore(MAX_SLICES_IN_FLIGHT)

                async def read_slice(key: str, image: NDArray[np.float32]) -> None:
                    async with frames_in_flight:
                        outcome = await self._read_slice(card, usecase, image)
                    if isinstance(outcome, str):
                        unusable(key, outcome)
                    else:
                        read_slices[key] = outcome

                async with asyncio.TaskGroup() as group:
                    for index, (number, image) in enumerate(zip(numbers, images, strict=True)):
                        key = slice_key(record.sop_uid, number)
                        if index in unreadable_frames:
                            unusable(key, unreadable_frames[index])
                        else:
                            group.create_task(read_slice(key, image))

        started = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as group:  # a slice that fails for good cancels the others' reads
                for record in held:
                    group.create_task(read(record))
        except Exception as exc:
            cause = exc
            while isinstance(cause, ExceptionGroup):
                cause = cause.exceptions[0]
            return ResultRecord(**base, state=InstanceState.FAILED, reason=f"{type(cause).__name__}: {cause}")
        timings["slices"] = time.perf_counter() - started
        if not read_slices:
            reason = f"no slice of the series could be read: {unreadable[0] if unreadable else 'none held'}"
            return ResultRecord(**base, state=InstanceState.UNUSABLE, reason=reason)
        slices = {key: read_slices[key].scores for key in sorted(read_slices, key=_slice_order(held))}
        scores = {label: max(s[label] for s in slices.values()) for label in card.label_names}
        triage, decisions = verdict(card, scores)
        model = next(iter(read_slices.values())).model
        result = ResultRecord(
            **base,
            state=InstanceState.DONE,
            triage_status=triage,
            scores=scores,
            decisions=decisions,
            model=model,
            slices=slices,
        )
        keys = {r.sop_uid: r.object_key for r in held}
        images = [
            (keys[sop_uid], frame, read_slices[key].heatmaps)
            for key in result.key_slices
            for sop_uid, frame in [slice_of(key)]
        ]
        try:
            started = time.perf_counter()
            assets = await self._attempts(
                "outputs",
                lambda: build_outputs.options(resources=self.task_resources).remote(
                    self.location, images, result, str(card.folder / CARD_FILE)
                ),
            )
            timings["outputs"] = time.perf_counter() - started
        except Exception as exc:
            return ResultRecord(**base, state=InstanceState.FAILED, reason=f"outputs: {type(exc).__name__}: {exc}")
        return dataclasses.replace(
            result, assets=assets, timings_s={name: round(value, 4) for name, value in timings.items()}
        )

    async def _slices_of(self, card: ModelCard, record: InstanceRecord) -> tuple[NDArray[np.float32], dict[int, str]]:
        """An instance of a series as the model's inputs, one per frame, and why any frame could not be read."""
        images: tuple[NDArray[np.float32], dict[int, str]] = await self._attempts(
            "preprocess",
            lambda: preprocess_slices.options(resources=self.task_resources).remote(
                self.location, record.object_key, card.input.size, card.preprocessing.windowing
            ),
        )
        return images

    async def _read_slice(self, card: ModelCard, usecase: UseCase, image: NDArray[np.float32]) -> Prediction | str:
        """One slice through the model, or why it is unusable (blank)."""
        if (reason := blank_reason(image)) is not None:
            return reason
        return await self._attempts("inference", lambda: self._predict(card, usecase, image))

    async def _predict(self, card: ModelCard, usecase: UseCase, image: NDArray[np.float32]) -> Prediction:
        """The model's prediction, checked against the card (`check_prediction`) within the attempt, so that an
        answer from a replica of another card version (a rolling update) is asked again, of another replica."""
        prediction: Prediction = await self.models[usecase].predict.remote(image)
        return check_prediction(card, prediction)

    async def _with_assets(self, result: ResultRecord, record: InstanceRecord, card: ModelCard) -> ResultRecord:
        """Assets that say why an image is unusable; without them if they cannot be made (the reason stays)."""
        try:
            assets = await self._attempts(
                "outputs",
                lambda: build_outputs.options(resources=self.task_resources).remote(
                    self.location, [(record.object_key, None, None)], result, str(card.folder / CARD_FILE)
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
                delay = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** (attempt - 1))
                logger.warning("%s attempt %d failed (%s); retrying in %.1fs", stage, attempt, cause, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _write(self, batch: Batch) -> bool:
        """False when a condition of the batch did not hold (that instance's rows were left out). The catalog
        announces a batch with results to the notifier (`WebhookNotifier.listen`): their webhooks go out now."""
        written: bool = await self.catalog.write.remote(batch)
        return written


def _observe(result: ResultRecord) -> None:
    """Stage-time and failure metrics of a recorded result."""
    for stage, seconds in result.timings_s.items():
        metrics.histogram("qure_stage_seconds").observe(seconds, tags={"stage": stage, "usecase": result.usecase.value})
    if result.state in (InstanceState.UNUSABLE, InstanceState.UNSUPPORTED, InstanceState.FAILED):
        metrics.count_failure("processing", result.state.value)


def _still_held(record: InstanceRecord) -> Unsettled:
    """A slice that still holds the content its series read (or, for a late slice, that was found late)."""
    return Unsettled.of(record, states=frozenset({InstanceState.HELD}))


def _slice_order(held: list[InstanceRecord]) -> Callable[[str], tuple[int, int]]:
    """Slices in the order of their instances, frames in order: ties between slices' scores pick the same key
    slice however the reads finished."""
    position = {record.sop_uid: index for index, record in enumerate(held)}

    def order(key: str) -> tuple[int, int]:
        sop_uid, frame = slice_of(key)
        return position[sop_uid], frame or 0

    return order


def _late_reason(series_uid: str) -> str:
    return f"arrived after series {series_uid} was read; not part of its result (send new series UIDs to re-read)"


def _unwrap(exc: BaseException) -> BaseException:
    """The user exception inside a Ray task/actor error (RayTaskError wraps it with `.cause`)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
