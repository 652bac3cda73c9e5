"""The job manager's own decisions, over a real catalog and group commit, with the Ray handles replaced by
in-process calls (the integration tests run it under Serve)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.exceptions import RayActorError, RayTaskError

from qure_ray.dicom.validation import Rules
from qure_ray.pipeline import job_manager
from qure_ray.pipeline.job_manager import JobManager
from qure_ray.records import InstanceRecord, InstanceState, ResultRecord, SeriesRef, SeriesTrigger, UseCase
from qure_ray.routing import Router, load_routing
from qure_ray.storage import Batch, Catalog, GroupCommitter, LocalObjectStore, event_row, received_rows
from qure_ray.storage.catalog import series_start_row, settled_rows
from tests.unit.test_catalog import make_record


class Call:
    """A handle method's `.remote(...)`, run in this process."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    async def remote(self, *args: Any) -> Any:
        answer = self.function(*args)
        return await answer if asyncio.iscoroutine(answer) else answer


class CatalogCalls:
    def __init__(self, catalog: Catalog) -> None:
        committer = GroupCommitter(catalog, interval_s=0.0)
        self.instance = Call(catalog.instance)
        self.result = Call(catalog.result)
        self.series_instances = Call(catalog.series_instances)
        self.late_slices = Call(catalog.late_slices)
        self.write = Call(committer.write)


class Jobs(JobManager.func_or_class):  # type: ignore[misc, name-defined]
    """The job manager without Serve's graceful-shutdown hook (an async `__del__`, never awaited here)."""

    def __del__(self) -> None:
        pass


def manager(catalog: Catalog, *, served: frozenset[UseCase] = frozenset({UseCase.QXR, UseCase.QER})) -> Any:
    """A `JobManager` without its `__init__` (which starts its loops under Serve): the parts these tests use."""
    jobs = object.__new__(Jobs)
    jobs.catalog = CatalogCalls(catalog)
    jobs.cards = dict.fromkeys(served)
    jobs.router = Router(load_routing(), served)
    jobs.max_attempts = 2
    jobs.series_slots = asyncio.Semaphore(2)
    jobs._series_woken = asyncio.Event()
    jobs.series_awaiting_slices = set()
    jobs.task_resources = {}
    return jobs


def queued_instance(tmp_path: Path, sop_uid: str) -> tuple[Catalog, InstanceRecord, Any]:
    """A catalog holding one queued instance (content "aaaa..."), and a job manager over it."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    record = make_record(sop_uid, sha="aa" * 32)
    catalog.commit(received_rows(record))
    return catalog, record, manager(catalog)


def done(record: InstanceRecord) -> ResultRecord:
    return ResultRecord(
        source=record.source,
        sop_uid=record.sop_uid,
        usecase=UseCase.QXR,
        state=InstanceState.DONE,
        reason=f"read content {record.sha256[:4]}",
    )


def test_new_content_uploaded_while_an_instance_runs_is_read_again(tmp_path: Path) -> None:
    catalog, first, jobs = queued_instance(tmp_path, "5.5")
    reads: list[str] = []

    async def run() -> None:
        overwritten = asyncio.Event()

        async def workflow(record: InstanceRecord) -> ResultRecord:
            reads.append(record.sha256[:4])
            if len(reads) == 1:  # an overwrite lands while the first content is read
                await jobs.catalog.write.remote(received_rows(make_record("5.5", sha="bb" * 32)))
                overwritten.set()
            return done(record)

        jobs._workflow = workflow
        await jobs._process(first.ref)
        assert overwritten.is_set()

    asyncio.run(run())
    assert reads == ["aaaa", "bbbb"]
    assert catalog.result("site-a", "5.5").reason == "read content bbbb"  # type: ignore[union-attr]
    assert catalog.instance("site-a", "5.5").state is InstanceState.DONE  # type: ignore[union-attr]


def test_new_content_settled_at_ingest_while_the_old_runs_ends_settled_as_the_new(tmp_path: Path) -> None:
    """The new content is a knee radiograph, which ingest settled unsupported while the old content ran."""
    catalog, first, jobs = queued_instance(tmp_path, "5.6")
    real_workflow, runs = jobs._workflow, []

    async def run() -> None:
        async def workflow(record: InstanceRecord) -> ResultRecord:
            runs.append(record.sha256[:4])
            if len(runs) > 1:
                return await real_workflow(record)
            knee = dataclasses.replace(make_record("5.6", sha="cc" * 32), body_part="KNEE")
            unsupported = ResultRecord.without_model("site-a", "5.6", InstanceState.UNSUPPORTED, "no use case")
            await jobs.catalog.write.remote(received_rows(knee, settled=unsupported))
            return done(record)

        jobs._workflow = workflow
        await jobs._process(first.ref)

    asyncio.run(run())
    assert runs == ["aaaa"]  # the old content's result is not written over the new one's, nor run again
    assert catalog.instance("site-a", "5.6").state is InstanceState.UNSUPPORTED  # type: ignore[union-attr]
    assert catalog.result("site-a", "5.6").reason == "no use case"  # type: ignore[union-attr]
    assert catalog.query("SELECT count(*) AS n FROM results").column("n")[0].as_py() == 1


def process_with_writes_landing_first(jobs: Any, ref: Any, landing: Callable[[Batch], Batch | None]) -> list[str]:
    """`_process(ref)` with a workflow that notes the content it reads (its first 4 hex digits), returned; before
    each of its writes, `landing(batch)` may give another writer's batch that lands first."""
    real_write, reads = jobs._write, []

    async def write(batch: Batch) -> bool:
        if (other := landing(batch)) is not None:
            await jobs.catalog.write.remote(other)
        written: bool = await real_write(batch)
        return written

    async def workflow(record: InstanceRecord) -> ResultRecord:
        reads.append(record.sha256[:4])
        return done(record)

    jobs._write, jobs._workflow = write, workflow
    asyncio.run(jobs._process(ref))
    return reads


def test_an_upload_landing_just_before_the_result_is_written_is_read_too(tmp_path: Path) -> None:
    """Between the last look at the instance and the write of its result is no window to lose an upload in."""
    catalog, first, jobs = queued_instance(tmp_path, "5.7")
    landed: list[Batch] = []

    def upload_before_the_first_result(batch: Batch) -> Batch | None:
        if "results" not in batch.rows or landed:
            return None
        landed.append(received_rows(make_record("5.7", sha="bb" * 32)))
        return landed[0]

    assert process_with_writes_landing_first(jobs, first.ref, upload_before_the_first_result) == ["aaaa", "bbbb"]
    assert catalog.result("site-a", "5.7").reason == "read content bbbb"  # type: ignore[union-attr]
    assert catalog.instance("site-a", "5.7").state is InstanceState.DONE  # type: ignore[union-attr]


def test_an_instance_another_job_manager_settled_meanwhile_keeps_that_result(tmp_path: Path) -> None:
    """Two job managers on one catalog (a rolling update whose old replica outlived its wait): one result."""
    catalog, first, jobs = queued_instance(tmp_path, "5.8")
    runs: list[str] = []

    async def workflow(record: InstanceRecord) -> ResultRecord:
        runs.append(record.sha256[:4])
        other = dataclasses.replace(done(record), reason="settled by the other job manager")
        await jobs.catalog.write.remote(settled_rows(other))
        return done(record)

    jobs._workflow = workflow
    asyncio.run(jobs._process(first.ref))
    assert runs == ["aaaa"]
    assert catalog.result("site-a", "5.8").reason == "settled by the other job manager"  # type: ignore[union-attr]
    assert catalog.count("results") == 1


def test_an_unforeseen_error_settles_the_instance_as_failed_with_its_reason(tmp_path: Path) -> None:
    catalog, record, jobs = queued_instance(tmp_path, "6.6")

    async def broken(record: InstanceRecord) -> ResultRecord:
        raise KeyError("a defect")

    jobs._workflow = broken
    asyncio.run(jobs._process(record.ref))
    assert catalog.instance("site-a", "6.6").state is InstanceState.FAILED  # type: ignore[union-attr]
    assert catalog.result("site-a", "6.6").reason == "unexpected KeyError: 'a defect'"  # type: ignore[union-attr]
    assert catalog.unfinished() == []


@pytest.mark.parametrize(
    "failure",
    [
        RayActorError(),
        ConnectionError("the catalog's node went away"),
        RayTaskError("result", "Traceback: ...", TimeoutError("a call timed out")),
    ],
    ids=["ray-actor", "connection", "task-wrapping-timeout"],
)
def test_a_failure_of_the_platform_leaves_the_instance_unfinished_for_a_refill(
    tmp_path: Path, failure: Exception
) -> None:
    catalog, record, jobs = queued_instance(tmp_path, "6.7")

    async def broken(record: InstanceRecord) -> ResultRecord:
        raise failure

    jobs._workflow = broken
    asyncio.run(jobs._process(record.ref))
    assert catalog.result("site-a", "6.7") is None
    assert [unfinished.sop_uid for unfinished in catalog.unfinished()] == ["6.7"]


def test_a_run_reads_a_bounded_number_of_successive_contents(tmp_path: Path) -> None:
    """An instance overwritten before every result is left unfinished after a few contents, for a later run."""
    catalog, first, jobs = queued_instance(tmp_path, "5.4")
    uploads = iter(range(1, 100))

    def upload_before_each_result(batch: Batch) -> Batch | None:
        return received_rows(make_record("5.4", sha=f"{next(uploads):02x}" * 32)) if "results" in batch.rows else None

    reads = process_with_writes_landing_first(jobs, first.ref, upload_before_each_result)
    assert len(reads) == job_manager.MAX_CONTENTS_PER_RUN
    assert catalog.result("site-a", "5.4") is None
    assert catalog.instance("site-a", "5.4").state is InstanceState.QUEUED  # type: ignore[union-attr]


def test_an_instance_settled_after_it_was_read_is_not_reopened_by_a_second_job_manager(tmp_path: Path) -> None:
    """Job manager B reads the instance, A settles it, then B would mark it processing: refused, not run."""
    catalog, first, jobs = queued_instance(tmp_path, "5.9")

    def settled_by_a(batch: Batch) -> Batch | None:  # between B's read and B's first write
        return None if catalog.count("results") else settled_rows(dataclasses.replace(done(first), reason="by A"))

    assert process_with_writes_landing_first(jobs, first.ref, settled_by_a) == []
    assert catalog.count("results") == 1
    assert catalog.instance("site-a", "5.9").state is InstanceState.DONE  # type: ignore[union-attr]
    assert catalog.result("site-a", "5.9").reason == "by A"  # type: ignore[union-attr]


def test_a_slice_held_after_it_was_read_is_not_reopened_by_a_second_job_manager(tmp_path: Path) -> None:
    catalog, first, jobs = queued_instance(tmp_path, "5.3")
    held_by_a = ResultRecord.without_model("site-a", "5.3", InstanceState.HELD, "waits for its series")

    def hold_once(batch: Batch) -> Batch | None:
        state = catalog.instance("site-a", "5.3").state  # type: ignore[union-attr]
        return settled_rows(held_by_a) if state is InstanceState.QUEUED else None

    assert process_with_writes_landing_first(jobs, first.ref, hold_once) == []
    assert catalog.instance("site-a", "5.3").state is InstanceState.HELD  # type: ignore[union-attr]


def test_a_slice_held_for_its_series_has_no_result_to_announce(tmp_path: Path) -> None:
    catalog, record, jobs = queued_instance(tmp_path, "6.4")

    async def hold(record: InstanceRecord) -> ResultRecord:
        return ResultRecord(source=record.source, sop_uid=record.sop_uid, usecase=UseCase.QER,
                            state=InstanceState.HELD, reason="waits for its series")  # fmt: skip

    jobs._workflow = hold
    asyncio.run(jobs._process(record.ref))
    assert catalog.instance("site-a", "6.4").state is InstanceState.HELD  # type: ignore[union-attr]
    assert catalog.count("results") == 0  # nothing for the notifier to announce
    assert not jobs._series_woken.is_set()  # no round waits for its series


def test_a_slice_held_for_a_started_series_a_round_left_wakes_the_series_loop(tmp_path: Path) -> None:
    _, record, jobs = queued_instance(tmp_path, "6.5")
    jobs.series_awaiting_slices.add(SeriesRef(source=record.source, series_uid=record.series_uid))

    async def hold(record: InstanceRecord) -> ResultRecord:
        return ResultRecord(source=record.source, sop_uid=record.sop_uid, usecase=UseCase.QER,
                            state=InstanceState.HELD, reason="waits for its series")  # fmt: skip

    jobs._workflow = hold
    asyncio.run(jobs._process(record.ref))
    assert jobs._series_woken.is_set()  # perhaps its last slice: the series can start now


def test_a_started_series_is_looked_at_when_woken_not_at_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GET /compute` wakes the series loop: the series starts at once, not up to SERIES_POLL_S later."""
    monkeypatch.setattr(job_manager, "SERIES_POLL_S", 600.0)
    monkeypatch.setattr(job_manager, "MIN_SERIES_ROUND_GAP_S", 0.0)

    async def run() -> list[str]:
        rounds: list[str] = []
        looked = asyncio.Event()

        async def pending_series() -> list[Any]:
            rounds.append("round")
            looked.set()
            return []

        jobs = manager(Catalog(LocalObjectStore(tmp_path)))
        jobs.catalog = SimpleNamespace(series_due=Call(lambda quiet_s: []), late_slices=Call(lambda: []),
                                       pending_series=Call(pending_series))  # fmt: skip
        jobs.series_quiet_period_s = 30.0
        loop = asyncio.get_running_loop().create_task(jobs._series_loop())
        await asyncio.sleep(0.2)
        assert rounds == []  # no round before the poll interval
        await jobs.wake_series()
        await asyncio.wait_for(looked.wait(), timeout=30)
        loop.cancel()
        return rounds

    assert asyncio.run(run()) == ["round"]


def test_a_held_slice_is_left_to_its_series(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    record = dataclasses.replace(make_record("9.5"), modality="CT", body_part="HEAD", series_uid="7.5")
    rows = received_rows(record)
    rows.add("events", event_row(record.source, "9.5", InstanceState.HELD, "waits for its series"))
    catalog.commit(rows)
    jobs, runs = manager(catalog), []

    async def workflow(record: InstanceRecord) -> ResultRecord:
        runs.append(record.sop_uid)
        return done(record)

    jobs._workflow = workflow
    asyncio.run(jobs._process(record.ref))
    assert runs == [] and catalog.instance("site-a", "9.5").state is InstanceState.HELD  # type: ignore[union-attr]


def test_a_slice_given_new_content_while_its_series_runs_is_not_settled_with_the_series(tmp_path: Path) -> None:
    """The series read the old content: the new one stays queued, to be settled as late (not 'read with')."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    slices = {}
    for sop in ("9.6", "9.7"):
        slices[sop] = dataclasses.replace(make_record(sop), modality="CT", body_part="HEAD", series_uid="7.6")
        rows = received_rows(slices[sop])
        rows.add("events", event_row("site-a", sop, InstanceState.HELD, "waits for its series"))
        catalog.commit(rows)
    catalog.commit(series_start_row("site-a", "7.6", SeriesTrigger.COMPUTE))
    jobs = manager(catalog)

    async def series_workflow(series: SeriesRef, held: list[InstanceRecord], _: object) -> ResultRecord:
        new_content = dataclasses.replace(slices["9.7"], sha256="cc" * 32)
        await jobs.catalog.write.remote(received_rows(new_content))  # uploaded while the slices are read
        return ResultRecord(source="site-a", sop_uid="7.6", usecase=UseCase.QER, state=InstanceState.DONE)

    jobs._series_workflow = series_workflow
    asyncio.run(jobs._process_series(SeriesRef(source="site-a", series_uid="7.6")))
    assert catalog.result("site-a", "7.6").state is InstanceState.DONE  # type: ignore[union-attr]
    assert catalog.instance("site-a", "9.6").state is InstanceState.DONE  # type: ignore[union-attr]
    assert catalog.instance("site-a", "9.7").state is InstanceState.QUEUED  # type: ignore[union-attr]
    asyncio.run(jobs._process(slices["9.7"].ref))  # its queue entry: the series was read without it
    late = catalog.instance("site-a", "9.7")
    assert late is not None and late.state is InstanceState.UNUSABLE and "arrived after series 7.6" in late.reason


def test_a_held_series_whose_use_case_has_no_model_any_more_is_settled_as_unsupported(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    for sop in ("9.1", "9.2"):
        record = dataclasses.replace(make_record(sop), modality="CT", body_part="HEAD", series_uid="7.7")
        rows = received_rows(record)
        rows.add("events", event_row(record.source, sop, InstanceState.HELD, "waits for its series"))
        catalog.commit(rows)
    catalog.commit(series_start_row("site-a", "7.7", SeriesTrigger.COMPUTE))
    jobs = manager(catalog, served=frozenset({UseCase.QXR}))  # the head-CT card was removed on a redeploy

    asyncio.run(jobs._process_series(SeriesRef(source="site-a", series_uid="7.7")))
    result = catalog.result("site-a", "7.7")
    assert result is not None and result.state is InstanceState.UNSUPPORTED
    assert "'qer'" in result.reason and "no model deployed" in result.reason
    assert catalog.pending_series() == []


def test_a_new_job_manager_starts_its_work_once_the_one_it_replaces_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alive = [["SERVE_REPLICA::app#JobManager#old"]] * 3 + [[]]
    monkeypatch.setattr(job_manager, "this_replica", lambda: "SERVE_REPLICA::app#JobManager#new")
    monkeypatch.setattr(job_manager, "live_other_replicas", lambda own: alive.pop(0))
    monkeypatch.setattr(job_manager, "PREDECESSOR_POLL_S", 0.01)
    started: list[int] = []

    async def run() -> None:
        jobs = object.__new__(Jobs)
        jobs._predecessor_gone = asyncio.create_task(jobs._wait_for_predecessor())

        async def work() -> None:
            started.append(len(alive))

        await asyncio.wait_for(jobs._after_predecessor(work()), timeout=5)

    asyncio.run(run())
    assert started == [0]  # after the fourth look found no other replica


def test_the_queue_is_refilled_from_the_catalog_only_when_it_runs_dry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refill during a backlog finds nothing new and holds the catalog actor for seconds."""
    monkeypatch.setattr(job_manager, "RESYNC_INTERVAL_S", 0.0)
    calls: list[str] = []
    handed_out = [make_record(f"4.{i}").ref for i in range(3)] + [None] + [make_record("4.9").ref] + [None]

    async def get(timeout_s: float) -> Any:
        ref = handed_out.pop(0) if handed_out else None
        calls.append(ref.sop_uid if ref else "(empty)")
        if not handed_out:
            raise asyncio.CancelledError  # enough: stop the loop
        return ref

    async def rebuild(in_flight: list[tuple[str, str]]) -> int:
        calls.append("refill")
        return 0

    async def run() -> None:
        jobs = object.__new__(Jobs)
        jobs.queue = SimpleNamespace(get=Call(get), rebuild=Call(rebuild))
        jobs.slots = asyncio.Semaphore(8)
        jobs.in_flight, jobs.run_again, jobs._work, jobs.processed = set(), {}, set(), 0

        async def process(ref: Any) -> None:
            pass

        jobs._process = process
        with pytest.raises(asyncio.CancelledError):
            await jobs._run()

    asyncio.run(run())
    assert calls == ["refill", "4.0", "4.1", "4.2", "(empty)", "refill", "4.9", "(empty)"]


def test_an_instance_queued_again_while_it_runs_is_queued_again_once_the_run_ends() -> None:
    """New content uploaded over a running instance is enqueued while the old content runs: that entry is
    kept for when the run ends, not dropped to wait for a refill."""
    entry = make_record("4.5").ref
    handed_out: list[Any] = [entry, entry]
    put_back: list[str] = []
    empty_polls: list[float] = []

    async def run() -> None:
        release = asyncio.Event()

        async def get(timeout_s: float) -> Any:
            if handed_out:
                return handed_out.pop(0)
            release.set()  # both entries handed out: let the run end
            await asyncio.sleep(0.01)
            empty_polls.append(timeout_s)
            if put_back or len(empty_polls) > 50:
                raise asyncio.CancelledError  # enough: stop the loop
            return None

        async def put(ref: Any) -> bool:
            put_back.append(ref.sop_uid)
            return True

        async def rebuild(in_flight: list[tuple[str, str]]) -> int:
            return 0

        jobs = object.__new__(Jobs)
        jobs.queue = SimpleNamespace(get=Call(get), put=Call(put), rebuild=Call(rebuild))
        jobs.slots = asyncio.Semaphore(8)
        jobs.in_flight, jobs.run_again, jobs._work, jobs.processed = set(), {}, set(), 0

        async def process(ref: Any) -> None:
            await release.wait()

        jobs._process = process
        with pytest.raises(asyncio.CancelledError):
            await jobs._run()

    asyncio.run(run())
    assert put_back == ["4.5"]


class _Answers:
    """A Ray task's `.options(...).remote(...)`, answered in this process by `answer(*args)`."""

    def __init__(self, answer: Callable[..., Any]) -> None:
        self.answer = answer

    def options(self, **_: object) -> _Answers:
        return self

    async def remote(self, *args: Any) -> Any:
        return self.answer(*args)


def test_each_frame_of_an_instance_in_a_series_is_a_slice_named_by_its_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enhanced CT holds a whole series in one object: it was refused. Each frame is now a slice, named
    `SOPInstanceUID/frames/N`, beside the single-frame slices of the series; a frame that cannot be read costs
    only its slice; a key slice's outputs show its frame."""
    import numpy as np

    from qure_ray.models import load_card
    from qure_ray.paths import SHIPPED_MODELS_DIR
    from qure_ray.records import Prediction

    card = load_card(SHIPPED_MODELS_DIR / "qer-densenet" / "model.yaml")
    noise = np.random.default_rng(0).random((8, 8), dtype=np.float32) * 0.2
    frames = np.stack([noise + level for level in (0.2, 0.7, 0.4)])  # the second frame scores highest

    def slices_of(_: object, key: str, *__: object) -> tuple[Any, dict[int, str]]:
        return (frames[:1], {}) if "9.6" in key else (frames, {2: "frame 3: cut short"})

    monkeypatch.setattr(job_manager, "preprocess_slices", _Answers(slices_of))
    rendered: list[list[Any]] = []
    monkeypatch.setattr(job_manager, "build_outputs", _Answers(lambda _, images, *__: rendered.append(images) or {}))
    heatmaps = np.zeros((len(card.label_names), 2, 2), np.float16)

    def predict(image: Any) -> Prediction:
        scores = dict.fromkeys(card.label_names, round(float(image.mean()), 3))
        return Prediction(scores=scores, model=card.info, heatmaps=heatmaps)

    model = SimpleNamespace(predict=Call(predict))
    catalog = Catalog(LocalObjectStore(tmp_path))
    held = [dataclasses.replace(make_record(sop), modality="CT", body_part="HEAD", series_uid="7.5")
            for sop in ("9.5", "9.6")]  # fmt: skip
    jobs = manager(catalog)
    jobs.location, jobs.max_attempts, jobs.cards, jobs.models = None, 1, {UseCase.QER: card}, {UseCase.QER: model}
    result = asyncio.run(jobs._series_workflow(SeriesRef(source="site-a", series_uid="7.5"), held, held))
    assert result.state is InstanceState.DONE
    assert list(result.slices) == ["9.5/frames/1", "9.5/frames/2", "9.6"]  # frame 3 could not be read: only it
    assert result.key_slices == ["9.5/frames/2"] and result.scores == result.slices["9.5/frames/2"]
    assert rendered == [[(held[0].object_key, 2, heatmaps)]]


def test_a_series_of_which_no_slice_can_be_read_says_why(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    held = []
    for sop in ("9.8", "9.9"):
        held.append(dataclasses.replace(make_record(sop), modality="CT", body_part="HEAD", series_uid="7.8"))
    jobs = manager(catalog)

    async def slices_of(card: Any, record: InstanceRecord) -> Any:
        raise job_manager.InvalidInstanceError(Rules.PIXEL_DATA_UNDECODABLE.value.violation("JPEG 2000 cut short"))

    jobs._slices_of = slices_of
    result = asyncio.run(jobs._series_workflow(SeriesRef(source="site-a", series_uid="7.8"), held, held))
    assert result.state is InstanceState.UNUSABLE
    assert result.reason.startswith("no slice of the series could be read: (7FE0,0010) PixelData: JPEG 2000 cut")


def test_a_settled_series_is_not_settled_again_by_a_stale_round(tmp_path: Path) -> None:
    """Its slices are final, none held: a late round (or a second job manager) must not call it unsupported."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    record = dataclasses.replace(make_record("9.4"), modality="CT", body_part="HEAD", series_uid="7.4")
    rows = received_rows(record)
    rows.add("events", event_row("site-a", "9.4", InstanceState.DONE, "read with series 7.4"))
    catalog.commit(rows)
    catalog.commit(series_start_row("site-a", "7.4", SeriesTrigger.COMPUTE))
    series_result = ResultRecord(source="site-a", sop_uid="7.4", usecase=UseCase.QER, state=InstanceState.DONE)
    catalog.commit(settled_rows(series_result))
    jobs = manager(catalog)

    asyncio.run(jobs._process_series(SeriesRef(source="site-a", series_uid="7.4")))
    assert catalog.result("site-a", "7.4").state is InstanceState.DONE  # type: ignore[union-attr]
    assert catalog.count("results") == 1


def test_a_started_series_with_a_slice_still_routed_waits_for_that_slice_to_wake_it(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    _held_slice(catalog, "9.6", "7.6")
    catalog.commit(received_rows(dataclasses.replace(make_record("9.7"), modality="CT", body_part="HEAD",
                                                     series_uid="7.6")))  # queued: not routed yet  # fmt: skip
    catalog.commit(series_start_row("site-a", "7.6", SeriesTrigger.COMPUTE))
    jobs, series = manager(catalog), SeriesRef(source="site-a", series_uid="7.6")
    asyncio.run(jobs._process_series(series))
    assert catalog.result("site-a", "7.6") is None and jobs.series_awaiting_slices == {series}


def _held_slice(catalog: Catalog, sop: str, series: str, *, sha: str = "ab" * 32) -> InstanceRecord:
    record = dataclasses.replace(make_record(sop, sha=sha), modality="CT", body_part="HEAD", series_uid=series)
    rows = received_rows(record)
    rows.add("events", event_row("site-a", sop, InstanceState.HELD, "waits for its series"))
    catalog.commit(rows)
    return record


def test_a_slice_held_after_its_series_was_computed_is_not_computed_alone_by_a_stale_round(tmp_path: Path) -> None:
    """The series has its result: a second one from the late slice alone would replace its scores (and
    announce it again); the late slice is settled as late instead."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    _held_slice(catalog, "9.4", "7.4")
    catalog.commit(series_start_row("site-a", "7.4", SeriesTrigger.COMPUTE))
    series_result = ResultRecord(source="site-a", sop_uid="7.4", usecase=UseCase.QER, state=InstanceState.DONE)
    catalog.commit(settled_rows(series_result))
    _held_slice(catalog, "9.5", "7.4")  # held in the moment between its `_hold` check and the series' write
    jobs = manager(catalog)
    computed: list[str] = []

    async def series_workflow(series: SeriesRef, held: list[InstanceRecord], _: object) -> ResultRecord:
        computed.append(series.series_uid)
        return series_result

    jobs._series_workflow = series_workflow
    asyncio.run(jobs._process_series(SeriesRef(source="site-a", series_uid="7.4")))
    assert computed == [] and catalog.count("results") == 1
    asyncio.run(jobs._settle_late_slices())
    late = catalog.instance("site-a", "9.5")
    assert late is not None and late.state is InstanceState.UNUSABLE and "arrived after series 7.4" in late.reason


def test_a_slice_given_new_content_in_another_series_leaves_its_old_one(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    _held_slice(catalog, "9.1", "7.1")
    _held_slice(catalog, "9.2", "7.1")
    _held_slice(catalog, "9.2", "7.2", sha="cd" * 32)  # an overwrite source sent it again, in series 7.2
    assert [r.sop_uid for r in catalog.series_instances("site-a", "7.1")] == ["9.1"]
    assert [r.sop_uid for r in catalog.series_instances("site-a", "7.2")] == ["9.2"]
    reopened = Catalog(LocalObjectStore(tmp_path))  # the same after a restart
    assert [r.sop_uid for r in reopened.series_instances("site-a", "7.1")] == ["9.1"]


def test_a_series_failing_the_same_way_each_round_is_settled_as_failed_not_read_again(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    _held_slice(catalog, "9.3", "7.3")
    catalog.commit(series_start_row("site-a", "7.3", SeriesTrigger.COMPUTE))
    jobs = manager(catalog)
    rounds: list[str] = []

    async def series_workflow(series: SeriesRef, held: list[InstanceRecord], _: object) -> ResultRecord:
        rounds.append(series.series_uid)
        raise KeyError("intracranial_haemorrhage")  # a replica whose card differs from this one's

    jobs._series_workflow = series_workflow
    for _ in range(3):
        asyncio.run(jobs._process_series(SeriesRef(source="site-a", series_uid="7.3")))
    result = catalog.result("site-a", "7.3")
    assert rounds == ["7.3"] and result is not None and result.state is InstanceState.FAILED
    assert "KeyError" in result.reason and catalog.pending_series() == []


def _image(size: int) -> Any:
    """A preprocessed image with something in it (not blank)."""
    import numpy as np

    return np.random.default_rng(0).random((size, size), dtype=np.float32)


_PREPROCESSED = _Answers(lambda _, __, size, *___: _image(size))
"""`preprocess.options(...).remote(location, key, size, windowing)`, answered with `_image(size)`."""


@pytest.mark.parametrize(
    ("scores", "reason"),
    [
        ({"nodule": float("nan")}, "gave no usable score for nodule (nan)"),
        ({"nodule": float("inf")}, "gave no usable score for nodule (inf)"),
        ({"nodule": 1.5}, "gave no usable score for nodule (1.5)"),
        ({"an old label": 0.2}, "scored labels"),
    ],
    ids=["nan", "infinity", "above-one", "another-card-version"],
)
def test_a_prediction_that_is_not_a_score_per_card_label_fails_the_image_not_reports_it_routine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scores: dict[str, float], reason: str
) -> None:
    """NaN is below every threshold: without the check the image was DONE, Routine, nothing found."""
    from qure_ray.errors import ModelError
    from qure_ray.models import load_card
    from qure_ray.paths import SHIPPED_MODELS_DIR
    from qure_ray.records import Prediction

    card = load_card(SHIPPED_MODELS_DIR / "qxr-densenet" / "model.yaml")
    answered = {**dict.fromkeys(card.label_names, 0.1), **scores}
    if "an old label" in scores:
        del answered[card.label_names[0]]
    monkeypatch.setattr(job_manager, "preprocess", _PREPROCESSED)
    _, record, jobs = queued_instance(tmp_path, "6.2")
    jobs.location, jobs.max_attempts, jobs.cards = None, 1, {UseCase.QXR: card}
    model = SimpleNamespace(predict=Call(lambda image: Prediction(scores=answered, model=card.info)))
    jobs.models = {UseCase.QXR: model}
    record = dataclasses.replace(record, rows=512, columns=512)
    result = asyncio.run(jobs._workflow(record))
    assert result.state is InstanceState.FAILED and result.triage_status is None
    assert result.reason.startswith("ModelError: model qxr-densenet") and reason in result.reason
    with pytest.raises(ModelError, match=reason.split(" (")[0]):  # a series' slice: its series fails
        asyncio.run(jobs._read_slice(card, UseCase.QXR, _image(card.input.size)))


def test_an_answer_of_another_card_version_is_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During a rolling update one replica may serve the old card: the next attempt may reach a new one."""
    from qure_ray.models import load_card
    from qure_ray.paths import SHIPPED_MODELS_DIR
    from qure_ray.records import Prediction

    card = load_card(SHIPPED_MODELS_DIR / "qxr-densenet" / "model.yaml")
    answers = [{"an old label": 0.2}, dict.fromkeys(card.label_names, 0.1)]
    monkeypatch.setattr(job_manager, "preprocess", _PREPROCESSED)
    monkeypatch.setattr(job_manager, "RETRY_BASE_DELAY_S", 0.0)
    _, _, jobs = queued_instance(tmp_path, "6.3")
    jobs.location, jobs.max_attempts = None, 2
    model = SimpleNamespace(predict=Call(lambda image: Prediction(scores=answers.pop(0), model=card.info)))
    jobs.models = {UseCase.QXR: model}
    prediction = asyncio.run(jobs._read_slice(card, UseCase.QXR, _image(card.input.size)))
    assert isinstance(prediction, Prediction) and sorted(prediction.scores) == sorted(card.label_names)
    assert answers == []
