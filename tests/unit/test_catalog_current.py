"""The catalog's in-memory current state answers exactly what SQL over its full tables answers.

The SQL below is the definition (newest row per key, by time); `CurrentState` must agree with it after any mix
of writes, live and after the catalog is loaded again from its segments.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from qure_ray.records import (
    UNFINISHED_STATES,
    DeliveryOutcome,
    InstanceRecord,
    InstanceState,
    ResultRecord,
    SeriesRef,
    SeriesTrigger,
    UseCase,
)
from qure_ray.storage import Batch, Catalog, LocalObjectStore, event_row, received_rows
from qure_ray.storage.catalog import delivery_row, now, series_start_row, webhook_row
from qure_ray.storage.current import INDEX_ORDER
from qure_ray.storage.schema import TABLES
from tests.unit.test_catalog import make_record

LATEST_INSTANCES = """
    SELECT i.* EXCLUDE (row_id), e.state, e.reason FROM (
        SELECT * FROM instances QUALIFY row_number() OVER (PARTITION BY source, sop_uid ORDER BY received_at DESC) = 1
    ) i JOIN (
        SELECT source, sop_uid, state, reason FROM events
        QUALIFY row_number() OVER (PARTITION BY source, sop_uid ORDER BY event_at DESC) = 1
    ) e USING (source, sop_uid)
"""


def _rows(catalog: Catalog, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    """The answer of DuckDB `sql` over the catalog's tables, as tuples."""
    answer = catalog.query(sql, params)
    return list(zip(*(answer.column(name).to_pylist() for name in answer.column_names), strict=True))


def _sql_instances(catalog: Catalog) -> dict[tuple[str, str], tuple[str, str, str]]:
    rows = _rows(catalog, f"SELECT source, sop_uid, series_uid, state, reason FROM ({LATEST_INSTANCES})")
    return {(source, sop): (series, state, reason or "") for source, sop, series, state, reason in rows}


def _sql_states(catalog: Catalog) -> dict[str, int]:
    rows = _rows(catalog, f"SELECT state, count(*) FROM ({LATEST_INSTANCES}) GROUP BY state")
    return {str(state): int(count) for state, count in rows}


def _sql_pending_series(catalog: Catalog) -> list[SeriesRef]:
    rows = _rows(
        catalog,
        """
        SELECT source, series_uid FROM series s
        WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.source = s.source AND r.sop_uid = s.series_uid)
        GROUP BY source, series_uid ORDER BY min(started_at)
        """,
    )
    return [SeriesRef(source=source, series_uid=uid) for source, uid in rows]


def _sql_late_slices(catalog: Catalog) -> set[tuple[str, str]]:
    rows = _rows(
        catalog,
        f"""
        SELECT source, sop_uid FROM ({LATEST_INSTANCES}) i WHERE state = 'held'
        AND EXISTS (SELECT 1 FROM results r WHERE r.source = i.source AND r.sop_uid = i.series_uid)
        """,
    )
    return set(rows)


def _sql_series_due(catalog: Catalog, quiet_period_s: float) -> list[SeriesRef]:
    rows = _rows(
        catalog,
        f"""
        SELECT i.source, i.series_uid FROM ({LATEST_INSTANCES}) i
        WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.source = i.source AND s.series_uid = i.series_uid)
        GROUP BY i.source, i.series_uid
        HAVING bool_or(i.state = 'held') AND max(i.received_at) < ?
        ORDER BY max(i.received_at)
        """,
        [now() - timedelta(seconds=quiet_period_s)],
    )
    return [SeriesRef(source=source, series_uid=uid) for source, uid in rows]


def _sql_undelivered(catalog: Catalog) -> list[str]:
    rows = _rows(
        catalog,
        """
        WITH hooks AS (
            SELECT * FROM webhooks QUALIFY row_number() OVER (PARTITION BY source ORDER BY registered_at DESC) = 1
        ), last_off AS (
            SELECT source, max(registered_at) AS off_at FROM webhooks WHERE NOT active GROUP BY source
        ), active_since AS (  -- the first registration since the webhook was last removed
            SELECT w.source, min(w.registered_at) AS since FROM webhooks w LEFT JOIN last_off o USING (source)
            WHERE w.active AND (o.off_at IS NULL OR w.registered_at > o.off_at) GROUP BY w.source
        )
        SELECT r.row_id FROM results r
        JOIN hooks h ON h.source = r.source AND h.active
        JOIN active_since a ON a.source = r.source AND r.finished_at >= a.since
        WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                          WHERE d.result_row_id = r.row_id AND d.outcome IN ('delivered', 'gave_up'))
        ORDER BY r.finished_at
        """,
    )
    return [row_id for (row_id,) in rows]


def _assert_agrees(catalog: Catalog) -> None:
    expected = _sql_instances(catalog)
    for (source, sop), (series, state, reason) in expected.items():
        found = catalog.instance(source, sop)
        assert found is not None and (found.series_uid, found.state.value, found.reason) == (series, state, reason)
    assert catalog.instance("site-a", "9.9.9") is None
    assert catalog.states() == _sql_states(catalog)
    unfinished = {key for key, (_, state, _) in expected.items() if state in {s.value for s in UNFINISHED_STATES}}
    assert {(r.source, r.sop_uid) for r in catalog.unfinished()} == unfinished
    received = [r.received_at for r in catalog.unfinished()]
    assert received == sorted(received)
    for source, series in {(source, series) for (source, _), (series, _, _) in expected.items()}:
        members = {sop for (src, sop), (ser, _, _) in expected.items() if (src, ser) == (source, series)}
        assert {r.sop_uid for r in catalog.series_instances(source, series)} == members
    assert catalog.pending_series() == _sql_pending_series(catalog)
    assert {(r.source, r.sop_uid) for r in catalog.late_slices()} == _sql_late_slices(catalog)
    for quiet in (0.0, 0.5, 3600.0):
        assert catalog.series_due(quiet_period_s=quiet, at=now()) == _sql_series_due(catalog, quiet)
    assert [n.result_row_id for n in catalog.undelivered(limit=1000)] == _sql_undelivered(catalog)
    for source, sop in expected:
        found = _rows(
            catalog,
            "SELECT state FROM results WHERE source = ? AND sop_uid = ? ORDER BY finished_at DESC LIMIT 1",
            [source, sop],
        )
        newest = found[0] if found else None
        result = catalog.result(source, sop)
        assert (result.state.value if result else None) == (newest[0] if newest else None)


def _random_writes(catalog: Catalog, rng: random.Random, rounds: int) -> None:
    known: list[InstanceRecord] = []
    for step in range(rounds):
        batch = Batch()
        action = rng.random()
        if action < 0.35 or not known:
            source = rng.choice(["site-a", "site-b"])
            record = replace(
                make_record(f"1.2.3.{step}.{rng.randrange(3)}", source=source),
                series_uid=f"1.2.3.{rng.randrange(4)}",
                received_at=now(),
            )
            batch.extend(received_rows(record))
            known.append(record)
        elif action < 0.6:
            record = rng.choice(known)
            state = rng.choice(list(InstanceState))
            batch.add("events", event_row(record.source, record.sop_uid, state, reason=f"r{step}"))
        elif action < 0.75:
            record = rng.choice(known)
            uid = rng.choice([record.sop_uid, record.series_uid])
            state = rng.choice([InstanceState.DONE, InstanceState.UNUSABLE, InstanceState.FAILED])
            result = ResultRecord(source=record.source, sop_uid=uid, usecase=UseCase.QXR, state=state)
            batch.add("results", {**result.to_row(), "finished_at": now()})
        elif action < 0.85:
            record = rng.choice(known)
            batch.extend(series_start_row(record.source, record.series_uid, SeriesTrigger.COMPUTE))
        elif action < 0.92:
            batch.extend(webhook_row(rng.choice(["site-a", "site-b"]), "http://127.0.0.1:9/h", "s" * 32,
                                     active=rng.random() < 0.8))  # fmt: skip
        else:
            for notification in catalog.undelivered(limit=3):
                outcome = rng.choice(list(DeliveryOutcome))
                batch.extend(delivery_row(notification, attempt=1, outcome=outcome, status_code=None))
        if len(batch):
            catalog.commit(batch)


def test_current_state_agrees_with_sql_over_the_full_tables(tmp_path: Path) -> None:
    assert sorted(INDEX_ORDER) == sorted(TABLES)
    for seed in range(2):
        store = LocalObjectStore(tmp_path / str(seed))
        catalog = Catalog(store)
        _random_writes(catalog, random.Random(seed), rounds=200)
        _assert_agrees(catalog)
        assert catalog.states().get(InstanceState.HELD.value), "the mix should hold some slices"
        _assert_agrees(Catalog(store))  # loaded from its segments


def test_series_members_one_key_alone_then_a_set(tmp_path: Path) -> None:
    """A chest X-ray's series has one instance: kept as that key, not a set; a second instance makes it a set."""
    catalog = Catalog(LocalObjectStore(tmp_path))
    current = catalog.current
    first = replace(make_record("1.2.3.10"), series_uid="1.2.3.77", received_at=now())
    catalog.commit(received_rows(first))
    catalog.commit(received_rows(replace(first, received_at=now())))  # the same instance again
    assert current.members_of(("site-a", "1.2.3.77")) == (("site-a", "1.2.3.10"),)
    assert catalog.has_series("site-a", "1.2.3.77") and not catalog.has_series("site-a", "1.2.3.78")
    assert current.members_of(("site-a", "1.2.3.78")) == ()
    second = replace(make_record("1.2.3.11"), series_uid="1.2.3.77", received_at=now())
    catalog.commit(received_rows(second))
    assert set(current.members_of(("site-a", "1.2.3.77"))) == {("site-a", "1.2.3.10"), ("site-a", "1.2.3.11")}
    assert {r.sop_uid for r in catalog.series_instances("site-a", "1.2.3.77")} == {"1.2.3.10", "1.2.3.11"}
    _assert_agrees(catalog)
    _assert_agrees(Catalog(LocalObjectStore(tmp_path)))  # and the same once loaded again
