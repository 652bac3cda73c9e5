from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from qure_ray.pipeline.replicas import other_replicas
from qure_ray.records import (
    DeliveryOutcome,
    InstanceRecord,
    InstanceState,
    ModelInfo,
    ResultRecord,
    SeriesRef,
    SeriesTrigger,
    TriageStatus,
    UseCase,
)
from qure_ray.storage import Batch, Catalog, GroupCommitter, LocalObjectStore, event_row, received_rows
from qure_ray.storage.catalog import (
    COMPACT_AFTER_SEGMENTS,
    Unsettled,
    delivery_row,
    now,
    series_start_row,
    settled_rows,
    webhook_row,
)
from qure_ray.storage.keys import segment_key, segment_named_ns
from qure_ray.storage.merging import merge_groups, size_tier
from qure_ray.storage.object_store import ObjectInfo


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


def _settle(sop_uid: str, sha: str, state: InstanceState = InstanceState.DONE) -> Batch:
    """A result written only if the instance still holds content `sha` and is not final."""
    result = ResultRecord(source="site-a", sop_uid=sop_uid, usecase=UseCase.QXR, state=state, reason=sha[:4])
    batch = settled_rows(result)
    batch.only_if = (Unsettled("site-a", sop_uid, sha),)
    return batch


def test_a_conditional_settle_is_written_only_for_the_content_read_and_only_once(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    catalog.commit(received_rows(make_record("7.1", sha="aa" * 32)))

    async def writes() -> list[bool]:
        committer = GroupCommitter(catalog, interval_s=0.0)
        return [
            await committer.write(_settle("7.1", "bb" * 32)),  # content the instance does not hold
            await committer.write(_settle("7.1", "aa" * 32)),
            await committer.write(_settle("7.1", "aa" * 32, InstanceState.FAILED)),  # already final
            await committer.write(_settle("7.9", "aa" * 32)),  # never stored
        ]

    assert asyncio.run(writes()) == [False, True, False, False]
    assert catalog.result("site-a", "7.1").reason == "aaaa"  # type: ignore[union-attr]
    assert catalog.instance("site-a", "7.1").state is InstanceState.DONE  # type: ignore[union-attr]
    assert catalog.count("results") == 1


def test_a_conditional_settle_counts_an_upload_ahead_of_it_in_the_same_flush(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    catalog.commit(received_rows(make_record("7.2", sha="aa" * 32)))
    catalog.commit(received_rows(make_record("7.3", sha="aa" * 32)))

    async def writes() -> list[bool]:
        committer = GroupCommitter(catalog, interval_s=0.05)  # both writes of each pair share a flush
        return list(
            await asyncio.gather(
                committer.write(received_rows(make_record("7.2", sha="bb" * 32))),  # the upload first
                committer.write(_settle("7.2", "aa" * 32)),
                committer.write(_settle("7.3", "aa" * 32)),  # the result first
                committer.write(received_rows(make_record("7.3", sha="bb" * 32))),
            )
        )

    assert asyncio.run(writes()) == [True, False, True, True]
    assert catalog.result("site-a", "7.2") is None
    assert catalog.instance("site-a", "7.2").state is InstanceState.QUEUED  # type: ignore[union-attr]
    assert catalog.instance("site-a", "7.3").state is InstanceState.QUEUED  # type: ignore[union-attr]


def test_an_upload_of_content_already_recorded_writes_nothing(tmp_path: Path) -> None:
    """Two uploads of the same content at once both find no record: the second to commit must not queue the
    instance again, least of all once the first was settled (a second result, a second webhook)."""
    catalog = Catalog(LocalObjectStore(tmp_path))

    async def writes() -> list[bool]:
        committer = GroupCommitter(catalog, interval_s=0.05)
        together = await asyncio.gather(
            committer.write(received_rows(make_record("7.6", sha="aa" * 32))),
            committer.write(received_rows(make_record("7.6", sha="aa" * 32))),  # the same flush
        )
        settled = await committer.write(_settle("7.6", "aa" * 32))
        late = await committer.write(received_rows(make_record("7.6", sha="aa" * 32)))  # after the settle
        other = await committer.write(received_rows(make_record("7.6", sha="bb" * 32)))  # new content: recorded
        return [*together, settled, late, other]

    assert asyncio.run(writes()) == [True, False, True, False, True]
    assert catalog.count("instances") == 2 and catalog.count("events") == 2 + 1 + 2
    assert catalog.instance("site-a", "7.6").sha256 == "bb" * 32  # type: ignore[union-attr]


def test_a_writer_cancelled_while_its_flush_runs_leaves_the_others_written(tmp_path: Path) -> None:
    """Serve passes a caller's cancellation on: the flush goes on for every other writer."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    catalog.commit(received_rows(make_record("7.4", sha="aa" * 32)))

    async def writes() -> list[bool]:
        committer = GroupCommitter(catalog, interval_s=0.05)
        refused = asyncio.ensure_future(committer.write(_settle("7.4", "bb" * 32)))
        written = asyncio.ensure_future(committer.write(_settle("7.4", "aa" * 32)))
        await asyncio.sleep(0)
        refused.cancel()
        later = await committer.write(received_rows(make_record("7.5")))
        return [await written, later]

    assert asyncio.run(asyncio.wait_for(writes(), 10)) == [True, True]  # a dead flusher would leave them waiting
    assert catalog.count("results") == 1 and catalog.instance("site-a", "7.5") is not None


def test_conditions_leave_out_only_the_instances_whose_condition_fails(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    for sop in ("7.6", "7.7"):
        catalog.commit(received_rows(make_record(sop, sha="aa" * 32)))
    batch = Batch(only_if=(Unsettled("site-a", "7.6", "aa" * 32), Unsettled("site-a", "7.7", "bb" * 32)))
    for sop in ("7.6", "7.7"):
        batch.add("events", event_row("site-a", sop, InstanceState.DONE))
    batch.add("results", _settle("7.0", "aa" * 32).rows["results"][0])  # another key: no condition

    assert asyncio.run(GroupCommitter(catalog, interval_s=0.0).write(batch)) is False
    assert catalog.instance("site-a", "7.6").state is InstanceState.DONE  # type: ignore[union-attr]
    assert catalog.instance("site-a", "7.7").state is InstanceState.QUEUED  # type: ignore[union-attr]
    assert catalog.result("site-a", "7.0") is not None


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


def _hold(catalog: Catalog, *sop_uids: str) -> None:
    batch = Batch()
    for sop_uid in sop_uids:
        batch.extend(received_rows(make_record(sop_uid)))
        batch.add("events", event_row("site-a", sop_uid, InstanceState.HELD, "waiting for its series"))
    catalog.commit(batch)


def test_a_quiet_held_series_is_due_once_and_pending_until_its_result(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    _hold(catalog, "1.2.3.1.1", "1.2.3.1.2")
    series = SeriesRef(source="site-a", series_uid="1.2.3.1")
    assert catalog.series_due(quiet_period_s=60, at=now()) == []  # slices arrived just now
    assert catalog.series_due(quiet_period_s=60, at=now() + timedelta(seconds=61)) == [series]
    assert not catalog.series_started("site-a", "1.2.3.1") and catalog.pending_series() == []

    catalog.commit(series_start_row("site-a", "1.2.3.1", SeriesTrigger.QUIET_PERIOD))
    assert catalog.series_started("site-a", "1.2.3.1") and not catalog.series_started("site-b", "1.2.3.1")
    assert catalog.series_due(quiet_period_s=0, at=now() + timedelta(days=1)) == []
    assert Catalog(LocalObjectStore(tmp_path)).pending_series() == [series]  # durable across a restart

    result = ResultRecord(
        source="site-a", sop_uid="1.2.3.1", usecase=UseCase.QER, state=InstanceState.DONE,
        scores={"bleed": 0.9, "shift": 0.2}, slices={"1.2.3.1.1": {"bleed": 0.9, "shift": 0.1},
                                                    "1.2.3.1.2": {"bleed": 0.3, "shift": 0.2}},
        assets={"sc": ["assets/site-a/1.2.3.1/sc.dcm", "assets/site-a/1.2.3.1/sc_2.dcm"]},
    )  # fmt: skip
    batch = Batch()
    batch.add("results", {**result.to_row(), "finished_at": now()})
    catalog.commit(batch)
    assert catalog.pending_series() == []
    assert catalog.result("site-a", "1.2.3.1") == result
    assert result.key_slices == ["1.2.3.1.1", "1.2.3.1.2"]  # highest bleed, then highest shift
    assert [r.sop_uid for r in catalog.late_slices()] == ["1.2.3.1.1", "1.2.3.1.2"]  # still held: late


def test_a_new_slice_restarts_the_quiet_period(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    _hold(catalog, "1.2.3.1.1")
    catalog.commit(received_rows(make_record("1.2.3.1.2")))  # queued, newer: it resets the quiet period
    assert catalog.series_due(quiet_period_s=60, at=now() + timedelta(seconds=61)) != []
    catalog.commit(received_rows(make_record("1.2.3.1.3")))
    assert catalog.series_due(quiet_period_s=60, at=now() + timedelta(seconds=30)) == []


def test_old_result_rows_with_one_asset_key_per_kind_still_read() -> None:
    row = {**ResultRecord(source="s", sop_uid="1.2", usecase=UseCase.QXR, state=InstanceState.DONE).to_row()}
    row["assets_json"] = '{"sc": "assets/s/1.2/sc.dcm"}'
    del row["slices_json"], row["model_trained_on"]
    assert ResultRecord.from_row(row).assets == {"sc": ["assets/s/1.2/sc.dcm"]}


def test_results_after_a_webhook_is_registered_are_pending_until_delivered_or_given_up(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))

    def finish(sop_uid: str) -> None:
        batch = received_rows(make_record(sop_uid))
        result = ResultRecord(source="site-a", sop_uid=sop_uid, usecase=UseCase.QXR, state=InstanceState.DONE)
        batch.add("results", {**result.to_row(), "finished_at": now()})
        catalog.commit(batch)

    finish("1.2.3.1.1")  # before registration: never announced
    catalog.commit(webhook_row("site-a", "http://127.0.0.1:9/hook", "s" * 32, active=True))
    assert catalog.webhook("site-a") is not None and catalog.webhook("site-b") is None
    finish("1.2.3.1.2")
    finish("1.2.3.1.3")
    pending = catalog.undelivered(limit=10)
    assert [n.uid for n in pending] == ["1.2.3.1.2", "1.2.3.1.3"]
    in_flight = {pending[0].result_row_id}  # being delivered: the next oldest instead
    assert [n.uid for n in catalog.undelivered(limit=1, exclude=in_flight)] == ["1.2.3.1.3"]
    payload = pending[0].payload("https://ai.example.org/")
    assert payload["result_url"] == "https://ai.example.org/results/1.2.3.1.2"
    assert payload["sop_instance_uid"] == "1.2.3.1.2" and payload["study_instance_uid"] == "1.2.3"
    assert "PatientName" not in str(payload) and "s" * 32 not in repr(pending[0])  # no PHI, secret not shown

    catalog.commit(delivery_row(pending[0], attempt=1, outcome=DeliveryOutcome.RETRYING, status_code=500))
    assert len(catalog.undelivered(limit=10)) == 2
    resumed = Catalog(LocalObjectStore(tmp_path)).undelivered(limit=10)  # a restart resumes the attempt count
    assert [(n.uid, n.attempts_made) for n in resumed] == [("1.2.3.1.2", 1), ("1.2.3.1.3", 0)]
    catalog.commit(delivery_row(pending[0], attempt=2, outcome=DeliveryOutcome.DELIVERED, status_code=200))
    catalog.commit(delivery_row(pending[1], attempt=1, outcome=DeliveryOutcome.GAVE_UP, status_code=None))
    assert catalog.undelivered(limit=10) == []

    catalog.commit(webhook_row("site-a", "", "", active=False))
    finish("1.2.3.1.4")
    assert catalog.webhook("site-a") is None and catalog.undelivered(limit=10) == []


def test_registering_a_webhook_again_keeps_the_results_still_pending(tmp_path: Path) -> None:
    """A partner whose endpoint failed fixes its URL: what was not delivered yet goes to the new one (a restart
    too); after a removal, nothing from before it is sent."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    catalog.commit(webhook_row("site-a", "http://127.0.0.1:9/broken", "s" * 32, active=True))
    result = ResultRecord(source="site-a", sop_uid="1.2.3.8.1", usecase=UseCase.QXR, state=InstanceState.DONE)
    batch = received_rows(make_record("1.2.3.8.1"))
    batch.add("results", {**result.to_row(), "finished_at": now()})
    catalog.commit(batch)
    catalog.commit(webhook_row("site-a", "http://127.0.0.1:9/fixed", "t" * 32, active=True))

    for current in (catalog, Catalog(LocalObjectStore(tmp_path))):
        [pending] = current.undelivered(limit=10)
        assert (pending.uid, pending.webhook.url) == ("1.2.3.8.1", "http://127.0.0.1:9/fixed")
    catalog.commit(webhook_row("site-a", "", "", active=False))
    catalog.commit(webhook_row("site-a", "http://127.0.0.1:9/again", "u" * 32, active=True))
    assert catalog.undelivered(limit=10) == []
    assert Catalog(LocalObjectStore(tmp_path)).undelivered(limit=10) == []


def test_a_webhook_secret_replaced_in_place_keeps_its_registration_and_wins_after_a_restart(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    catalog.commit(webhook_row("site-a", "http://127.0.0.1:9/hook", "sealed-under-old", active=True))
    [row] = catalog.webhook_rows()
    result = ResultRecord(source="site-a", sop_uid="1.2.3.9.1", usecase=UseCase.QXR, state=InstanceState.DONE)
    batch = received_rows(make_record("1.2.3.9.1"))
    batch.add("results", {**result.to_row(), "finished_at": now()})
    catalog.commit(batch)
    assert [n.uid for n in catalog.undelivered(limit=10)] == ["1.2.3.9.1"]

    catalog.commit(
        webhook_row("site-a", row["url"], "sealed-under-new", active=True, registered_at=row["registered_at"])
    )
    for reader in (catalog, Catalog(LocalObjectStore(tmp_path))):  # a tie on registered_at: the later row wins
        hook = reader.webhook("site-a")
        assert hook is not None and hook.secret == "sealed-under-new"
        assert [n.uid for n in reader.undelivered(limit=10)] == ["1.2.3.9.1"]  # still due: same registration
        assert [r["registered_at"] for r in reader.webhook_rows()] == [row["registered_at"]]


def test_a_second_writer_s_segments_are_picked_up_once(tmp_path: Path) -> None:
    """A rolling update: the new catalog loads, the old one still writes; `foreign_segments` finds those rows."""
    new = Catalog(LocalObjectStore(tmp_path))
    old = Catalog(LocalObjectStore(tmp_path))
    old.commit(received_rows(make_record("1.2.3.9")))
    new.commit(received_rows(make_record("1.2.3.8")))
    assert new.instance("site-a", "1.2.3.9") is None
    found = new.foreign_segments()
    assert set(found) == {"instances", "events"}  # its own segments are never foreign
    for table, keys in found.items():
        new.insert_segments(table, keys, new.read_segments(table, keys))
    assert new.instance("site-a", "1.2.3.9") is not None and new.foreign_segments() == {}
    for table, keys in found.items():  # loading the same rows again adds nothing
        new.insert_segments(table, keys, new.read_segments(table, keys))
    assert new.count("instances") == 2 and new.count("events") == 4


def _renamed(store: LocalObjectStore, key: str, named_ns: int) -> str:
    """A copy of segment `key` under a name from `named_ns`: an upload named then but finished only now."""
    table = key.split("/")[1]
    late = segment_key(table, named_ns, "late")
    store.put(late, store.get(key))
    return late


def test_a_catalog_replica_waits_only_for_its_own_deployment_s_other_replicas() -> None:
    """A rolling update runs old and new catalog replicas side by side; another application's catalog, or
    another deployment, is not one this replica replaces."""
    own = "SERVE_REPLICA::qure_ray#CatalogActor#new1"
    named = [
        own,
        "SERVE_REPLICA::qure_ray#CatalogActor#old1",
        "SERVE_REPLICA::qure_ray#JobManager#abc",
        "SERVE_REPLICA::staging#CatalogActor#xyz",
        "SERVE_CONTROLLER_ACTOR",
    ]
    assert other_replicas(named, own) == ["SERVE_REPLICA::qure_ray#CatalogActor#old1"]
    assert other_replicas([own, "SERVE_REPLICA::qure_ray#JobManager#abc"], own) == []
    assert other_replicas(["SERVE_REPLICA::CatalogActor#a", "SERVE_REPLICA::CatalogActor#b"],
                          "SERVE_REPLICA::CatalogActor#b") == ["SERVE_REPLICA::CatalogActor#a"]  # fmt: skip


def test_foreign_listing_starts_shortly_before_the_newest_key_it_saw(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    new, old = Catalog(store), Catalog(LocalObjectStore(tmp_path))
    new.commit(received_rows(make_record("1.2.3.8")))
    assert new.foreign_segments() == {}
    (newest,) = store.list_keys("catalog/instances/")
    newest_ns = segment_named_ns(newest)
    assert newest_ns is not None
    old.commit(received_rows(make_record("1.2.3.9")))
    (segment,) = [key for key in store.list_keys("catalog/instances/") if key != newest]
    late = _renamed(store, segment, newest_ns - 30 * 10**9)  # named before `newest`, within the overlap
    too_late = _renamed(store, segment, newest_ns - 120 * 10**9)  # beyond it: the window's stated limit
    store.delete(segment)
    assert too_late in store.list_keys("catalog/instances/")
    assert new.foreign_segments()["instances"] == [late]  # not `too_late`: the next listing starts after it
    assert too_late in new.foreign_segments(whole=True)["instances"]  # the last look, once the old one is gone


def test_merge_groups_take_a_full_tier_of_similar_sizes_only() -> None:
    assert [size_tier(size, 4) for size in (0, 3, 4, 15, 16, 64)] == [0, 0, 1, 1, 2, 3]
    small = [ObjectInfo(f"k{i:02d}", 100 + i, 0.0) for i in range(5)]
    large = [ObjectInfo(f"big{i}", 100_000, 0.0) for i in range(3)]
    assert merge_groups(small + large, fan_in=4) == [[f"k{i:02d}" for i in range(5)]]
    assert merge_groups(small[:3] + large, fan_in=4) == []


def test_running_catalog_merges_its_segments_and_a_restart_reads_the_same_rows(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = Catalog(store)
    other = Catalog(LocalObjectStore(tmp_path))  # a second writer: its segment is not this catalog's to merge
    other.commit(received_rows(make_record(sop_uid="1.2.3.99")))
    for i in range(40):
        catalog.commit(received_rows(make_record(sop_uid=f"1.2.3.{i + 10}")))
        catalog.commit(Batch({"events": [event_row("site-a", f"1.2.3.{i + 10}", InstanceState.DONE)]}))
    assert len(store.list_keys("catalog/events/")) == 81
    before = {table: catalog.count(table) for table in ("instances", "events")}
    assert catalog.merge_segments("events", fan_in=4) >= 80 - 3
    assert catalog.merge_segments("instances", fan_in=4) >= 40 - 3
    events, instances = store.list_keys("catalog/events/"), store.list_keys("catalog/instances/")
    assert len(events) <= 2 * 3 + 1 and len(instances) <= 2 * 3 + 1  # under fan_in per tier, plus the other's
    assert {table: catalog.count(table) for table in before} == before  # nothing in memory changed
    assert catalog.unfinished() == []
    assert catalog.foreign_segments() == {"events": [k for k in events if k not in catalog.segments],
                                          "instances": [k for k in instances if k not in catalog.segments]}  # fmt: skip

    reopened = Catalog(LocalObjectStore(tmp_path))
    assert reopened.count("instances") == 41 and reopened.count("events") == before["events"] + other.count("events")
    assert [r.sop_uid for r in reopened.unfinished()] == ["1.2.3.99"]
    assert reopened.instance("site-a", "1.2.3.10").state is InstanceState.DONE  # type: ignore[union-attr]


class _ListsAMergedSegmentOnce(LocalObjectStore):
    """A listing taken just before another writer merged a segment away: the key is listed but gone."""

    gone = segment_key("events", 1, "merged-away")

    def list_keys(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        keys = super().list_keys(prefix, start_after=start_after)
        if prefix == "catalog/events/" and self.gone:
            keys, self.gone = [self.gone, *keys], ""
        return keys


def test_a_segment_merged_away_while_loading_means_listing_again(tmp_path: Path) -> None:
    Catalog(LocalObjectStore(tmp_path)).commit(received_rows(make_record()))
    store = _ListsAMergedSegmentOnce(tmp_path)
    catalog = Catalog(store)
    assert store.gone == "" and catalog.instance("site-a", "1.2.3.4") is not None


class FailingPuts(LocalObjectStore):
    """A store whose puts under `fail_under` fail (S3 answering 503 after botocore's retries), or with `lands`
    fail after the object landed (the answer lost); it notes every put."""

    fail_under = "never/"
    lands = False

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, **options: Any) -> None:
        self.puts.append(key)
        if key.startswith(self.fail_under):
            if self.lands:
                super().put(key, data, **options)
            raise OSError("503 Slow Down")
        super().put(key, data, **options)


def _settling_batch() -> Batch:
    """An upload and a job manager's result in one flush: instances, events, results."""
    batch = received_rows(make_record("6.7"))
    result = ResultRecord(source="site-a", sop_uid="6.6", usecase=UseCase.QXR, state=InstanceState.DONE)
    batch.extend(settled_rows(result))
    return batch


def test_a_flush_that_fails_midway_leaves_no_segment_behind(tmp_path: Path) -> None:
    store = FailingPuts(tmp_path)
    catalog = Catalog(store)
    catalog.commit(received_rows(make_record("6.6")))
    store.fail_under = "catalog/results/"
    with pytest.raises(OSError):
        catalog.commit(_settling_batch())
    restarted = Catalog(LocalObjectStore(tmp_path))
    assert restarted.instance("site-a", "6.7") is None  # the upload's rows, written before the failure, are gone
    assert restarted.instance("site-a", "6.6").state is InstanceState.QUEUED  # type: ignore[union-attr]
    assert restarted.result("site-a", "6.6") is None


def test_a_segment_that_landed_though_its_put_failed_is_removed_too(tmp_path: Path) -> None:
    store = FailingPuts(tmp_path)
    catalog = Catalog(store)
    store.fail_under, store.lands = "catalog/events/", True  # the last of the flush: a final state without result
    with pytest.raises(OSError):
        catalog.commit(_settling_batch())
    assert store.list_keys("catalog/") == []
    assert Catalog(LocalObjectStore(tmp_path)).instance("site-a", "6.7") is None


def test_merging_leaves_the_segments_of_a_flush_in_progress_alone(tmp_path: Path) -> None:
    """Merged into another segment, rows a failing flush then rolls back would outlive it."""
    store = LocalObjectStore(tmp_path)
    catalog = Catalog(store)
    for i in range(8):
        catalog.commit(received_rows(make_record(sop_uid=f"1.2.4.{i}")))
    in_flight = store.list_keys("catalog/events/")[-4:]
    catalog._flushes.append(in_flight)  # as `persist` holds them while it writes
    catalog.merge_segments("events", fan_in=4)
    assert set(in_flight) <= set(store.list_keys("catalog/events/"))


def test_events_are_the_last_segment_of_a_flush(tmp_path: Path) -> None:
    store = FailingPuts(tmp_path)
    Catalog(store).commit(_settling_batch())
    tables = [key.split("/")[1] for key in store.puts if key.startswith("catalog/")]
    assert tables[-1] == "events" and set(tables) == {"instances", "events", "results"}


def test_the_committer_stamps_events_in_commit_order_whatever_their_writers_clocks(tmp_path: Path) -> None:
    """The ingress's clock a minute ahead of the job manager's: its `queued` must not outlive the later `done`."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    record = make_record("3.3")
    ahead = received_rows(record)
    for event in ahead.rows["events"]:
        event["event_at"] = now() + timedelta(minutes=1)
    result = ResultRecord(source="site-a", sop_uid="3.3", usecase=UseCase.QXR, state=InstanceState.DONE)

    async def write_in_turn() -> None:
        committer = GroupCommitter(catalog, interval_s=0.0)
        await committer.write(ahead)
        await committer.write(settled_rows(result))

    asyncio.run(write_in_turn())
    assert catalog.instance("site-a", "3.3").state is InstanceState.DONE  # type: ignore[union-attr]
    assert Catalog(LocalObjectStore(tmp_path)).instance("site-a", "3.3").state is InstanceState.DONE  # type: ignore[union-attr]


def test_the_committer_stamps_results_in_commit_order_too(tmp_path: Path) -> None:
    """A job manager's clock ahead of the ingress's: the unsupported result ingest writes later must win."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    done = ResultRecord(source="site-a", sop_uid="3.5", usecase=UseCase.QXR, state=InstanceState.DONE)
    ahead = settled_rows(done)
    ahead.rows["results"][0]["finished_at"] = now() + timedelta(minutes=1)
    knee = ResultRecord.without_model("site-a", "3.5", InstanceState.UNSUPPORTED, "a knee now")

    async def write_in_turn() -> None:
        committer = GroupCommitter(catalog, interval_s=0.0)
        await committer.write(ahead)
        await committer.write(received_rows(make_record("3.5"), settled=knee))

    asyncio.run(write_in_turn())
    assert catalog.result("site-a", "3.5").reason == "a knee now"  # type: ignore[union-attr]


def test_a_catalog_stamps_after_every_event_it_loaded(tmp_path: Path) -> None:
    batch = received_rows(make_record("3.4"))
    later = now() + timedelta(minutes=1)  # written by a replica whose clock was ahead of this machine's
    batch.rows["events"][-1]["event_at"] = later
    Catalog(LocalObjectStore(tmp_path)).commit(batch)
    Catalog(LocalObjectStore(tmp_path))
    assert now() > later
    time.sleep(0.2)  # and then time passes at the clock's pace, not a microsecond per stamp
    assert now() - later > timedelta(seconds=0.15)


def test_a_registration_is_stamped_where_it_commits_not_by_its_writer_s_clock(tmp_path: Path) -> None:
    """An ingress whose clock is behind the committer's: a result settled before the registration committed
    is not announced, one settled after it is."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    for sop in ("1.2.3.2.1", "1.2.3.2.2"):
        catalog.commit(received_rows(make_record(sop)))

    def settle(sop_uid: str) -> Batch:
        return settled_rows(
            ResultRecord(source="site-a", sop_uid=sop_uid, usecase=UseCase.QXR, state=InstanceState.DONE)
        )

    async def writes() -> None:
        committer = GroupCommitter(catalog, interval_s=0.0)
        registration = webhook_row("site-a", "http://127.0.0.1:9/hook", "s" * 32, active=True)  # made first
        await committer.write(settle("1.2.3.2.1"))
        await committer.write(registration)
        await committer.write(settle("1.2.3.2.2"))

    asyncio.run(writes())
    assert [n.uid for n in catalog.undelivered(limit=10)] == ["1.2.3.2.2"]
    reopened = Catalog(LocalObjectStore(tmp_path))  # decided by the stamps alone
    assert [n.uid for n in reopened.undelivered(limit=10)] == ["1.2.3.2.2"]


def test_a_catalog_stamps_after_every_registration_and_result_it_loaded(tmp_path: Path) -> None:
    """A catalog restarted on a node whose clock is behind: its new registration must still be the newest."""
    ahead = now() + timedelta(hours=1)  # written by a catalog whose clock ran an hour ahead
    Catalog(LocalObjectStore(tmp_path)).commit(
        webhook_row("site-a", "http://127.0.0.1:9/old", "s" * 32, active=True, registered_at=ahead)
    )
    reopened = Catalog(LocalObjectStore(tmp_path))
    reopened.commit(webhook_row("site-a", "http://127.0.0.1:9/new", "s" * 32, active=True))
    assert reopened.webhook("site-a").url.endswith("/new")  # type: ignore[union-attr]


def test_the_newest_content_is_the_last_committed_whatever_its_writer_s_clock() -> None:
    """Two uploads of one UID through ingress replicas whose clocks disagree: the store holds the second, so
    the catalog must name the second, even though the first was stamped by a clock running ahead."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        catalog = Catalog(LocalObjectStore(Path(folder)))
        first = make_record("7.8", sha="aa" * 32)
        first = InstanceRecord(**{**first.__dict__, "received_at": now() + timedelta(seconds=5)})

        async def writes() -> None:
            committer = GroupCommitter(catalog, interval_s=0.0)
            await committer.write(received_rows(first))
            await committer.write(received_rows(make_record("7.8", sha="bb" * 32)))

        asyncio.run(writes())
        assert catalog.instance("site-a", "7.8").sha256 == "bb" * 32  # type: ignore[union-attr]
        assert Catalog(LocalObjectStore(Path(folder))).instance("site-a", "7.8").sha256 == "bb" * 32  # type: ignore[union-attr]


def test_orphans_are_looked_for_only_once_the_replaced_catalog_s_segments_are_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before that, the originals the old replica's latest segments name look like orphans."""
    from types import SimpleNamespace

    from qure_ray.pipeline import catalog_actor

    swept: list[str] = []

    async def remove_orphans(store: object, catalog: object) -> None:
        swept.append("swept")

    monkeypatch.setattr(catalog_actor, "remove_orphans", remove_orphans)
    actor = SimpleNamespace(store=None, catalog=None, _sole_writer=asyncio.Event())

    async def run() -> list[str]:
        sweeping = asyncio.create_task(catalog_actor.CatalogActor.func_or_class._reconcile_forever(actor))
        await asyncio.sleep(0.05)
        before = list(swept)
        actor._sole_writer.set()
        await asyncio.sleep(0.05)
        sweeping.cancel()
        return before

    assert asyncio.run(run()) == [] and swept == ["swept"]


def test_an_older_webhook_row_applied_late_does_not_end_the_newer_registration(tmp_path: Path) -> None:
    """A rolling update loads the other replica's segments late: its older removal must not count."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    removed_at = now()
    catalog.commit(webhook_row("site-a", "http://127.0.0.1:9/hook", "s" * 32, active=True))  # newer
    catalog.commit(webhook_row("site-a", "", "", active=False, registered_at=removed_at))  # older, applied later
    result = ResultRecord(source="site-a", sop_uid="1.2.3.7.1", usecase=UseCase.QXR, state=InstanceState.DONE)
    batch = received_rows(make_record("1.2.3.7.1"))
    batch.add("results", {**result.to_row(), "finished_at": now()})
    catalog.commit(batch)
    assert [n.uid for n in catalog.undelivered(limit=10)] == ["1.2.3.7.1"]
