from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.parquet as pq

from qure_ray.records import InstanceRecord, InstanceState, ModelInfo, ResultRecord, TriageStatus, UseCase
from qure_ray.storage import Batch, Catalog, GroupCommitter, LocalObjectStore, event_row, received_rows
from qure_ray.storage.catalog import COMPACT_AFTER_SEGMENTS, now


def make_record(sop_uid: str = "1.2.3.4", source: str = "site-a", sha: str = "ab" * 32) -> InstanceRecord:
    return InstanceRecord(
        source=source,
        sop_uid=sop_uid,
        study_uid="1.2.3",
        series_uid="1.2.3.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        modality="DX",
        body_part="CHEST",
        view_position="PA",
        series_description="PA chest",
        rows=256,
        columns=256,
        transfer_syntax="1.2.840.10008.1.2.1",
        size_bytes=1000,
        sha256=sha,
        object_key=f"dicom/{source}/1.2.3/1.2.3.1/{sop_uid}.dcm",
        received_at=now(),
        state=InstanceState.QUEUED,
    )


def test_received_instance_is_queued_and_survives_a_restart(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = Catalog(store)
    catalog.commit(received_rows(make_record()))
    assert catalog.instance("site-a", "1.2.3.4").state is InstanceState.QUEUED  # type: ignore[union-attr]

    reopened = Catalog(LocalObjectStore(tmp_path))
    record = reopened.instance("site-a", "1.2.3.4")
    assert record is not None and record.state is InstanceState.QUEUED and record.sha256 == "ab" * 32
    assert [r.sop_uid for r in reopened.unfinished()] == ["1.2.3.4"]


def test_other_source_does_not_see_the_instance(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    catalog.commit(received_rows(make_record()))
    assert catalog.instance("site-b", "1.2.3.4") is None


def test_latest_event_is_the_state_and_results_round_trip(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    catalog.commit(received_rows(make_record()))
    result = ResultRecord(
        source="site-a",
        sop_uid="1.2.3.4",
        usecase=UseCase.QXR,
        state=InstanceState.DONE,
        triage_status=TriageStatus.CRITICAL,
        scores={"nodule": 0.9},
        decisions={"nodule": True},
        model=ModelInfo(name="m", version="1", trained=False),
        timings_s={"inference": 0.1},
    )
    batch = Batch()
    batch.add("events", event_row("site-a", "1.2.3.4", InstanceState.PROCESSING))
    batch.add("results", {**result.to_row(), "finished_at": now()})
    batch.add("events", event_row("site-a", "1.2.3.4", InstanceState.DONE))
    catalog.commit(batch)
    reopened = Catalog(LocalObjectStore(tmp_path))
    assert reopened.instance("site-a", "1.2.3.4").state is InstanceState.DONE  # type: ignore[union-attr]
    assert reopened.result("site-a", "1.2.3.4") == result
    assert reopened.unfinished() == []
    assert reopened.states() == {"done": 1}


def test_segments_are_plain_parquet_and_compacted_at_start(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = Catalog(store)
    for i in range(COMPACT_AFTER_SEGMENTS + 1):
        catalog.commit(received_rows(make_record(sop_uid=f"1.2.3.{i + 10}")))
    segments = store.list_keys("catalog/instances/")
    assert len(segments) == COMPACT_AFTER_SEGMENTS + 1
    table = pq.read_table(tmp_path / segments[0])
    assert table.column("sop_uid").to_pylist() == ["1.2.3.10"]

    reopened = Catalog(store)
    assert len(store.list_keys("catalog/instances/")) == 1
    assert reopened.count("instances") == COMPACT_AFTER_SEGMENTS + 1
    assert len(reopened.unfinished()) == COMPACT_AFTER_SEGMENTS + 1


def test_group_commit_gathers_concurrent_writers_into_few_segments(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = Catalog(store)

    async def write_many() -> GroupCommitter:
        committer = GroupCommitter(catalog, interval_s=0.05)
        await asyncio.gather(*(committer.write(received_rows(make_record(sop_uid=f"1.2.9.{i}"))) for i in range(50)))
        return committer

    committer = asyncio.run(write_many())
    assert catalog.count("instances") == 50
    assert committer.flushes < 5
    assert len(store.list_keys("catalog/events/")) == committer.flushes


def test_failed_flush_reaches_every_writer_and_nothing_becomes_visible(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    catalog = Catalog(store)
    (tmp_path / "store" / "catalog").mkdir(parents=True, exist_ok=True)
    (tmp_path / "store" / "catalog" / "instances").write_text("a file where the folder must go")

    async def write() -> list[BaseException | None]:
        committer = GroupCommitter(catalog, interval_s=0.0)
        results = await asyncio.gather(committer.write(received_rows(make_record())), return_exceptions=True)
        return list(results)

    (outcome,) = asyncio.run(write())
    assert outcome is not None and "failed" in str(outcome)
    assert catalog.count("instances") == 0


def test_segments_written_before_a_column_existed_still_load(tmp_path: Path) -> None:
    import pyarrow as pa

    from qure_ray.storage.schema import INSTANCES

    store = LocalObjectStore(tmp_path)
    Catalog(store).commit(received_rows(make_record()))
    (segment,) = store.list_keys("catalog/instances/")
    old = pq.read_table(tmp_path / segment).drop_columns(["series_description"])
    assert "series_description" not in old.column_names and isinstance(old, pa.Table)
    pq.write_table(old, tmp_path / segment)
    record = Catalog(store).instance("site-a", "1.2.3.4")
    assert record is not None and record.series_description == "" and len(INSTANCES) == len(old.schema) + 1
