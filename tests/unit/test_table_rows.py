"""`TableRows`: a table's rows in memory, by number, in few chunks; and DuckDB over them (`Catalog.query`)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from qure_ray.records import InstanceState
from qure_ray.storage import Batch, Catalog, LocalObjectStore, event_row
from qure_ray.storage.table_rows import CHUNK_FAN_IN, TableRows

SCHEMA = pa.schema([("n", pa.int64()), ("name", pa.string())])


def _rows(numbers: range) -> pa.Table:
    return pa.table({"n": list(numbers), "name": [f"row {n}" for n in numbers]}, schema=SCHEMA)


def test_rows_keep_their_numbers_while_chunks_are_combined() -> None:
    rows, rng, added = TableRows(SCHEMA), random.Random(7), 0
    for _ in range(600):
        size = rng.choice([0, 1, 1, 2, 3, 40])
        assert rows.append(_rows(range(added, added + size))) == added
        added += size
    assert len(rows) == added
    for number in [0, 1, added // 2, added - 1, *rng.sample(range(added), 50)]:
        assert rows.row(number) == {"n": number, "name": f"row {number}"}
    assert rows.table().column("n").to_pylist() == list(range(added))
    with pytest.raises(IndexError):
        rows.row(added)


def test_chunks_stay_few_as_flushes_add_up() -> None:
    """Each tier holds fewer than CHUNK_FAN_IN chunks: about 15 per factor of 16 in the number of flushes."""
    rows = TableRows(SCHEMA)
    for n in range(5000):
        rows.append(_rows(range(n, n + 1)))
    assert rows.chunk_count < 4 * CHUNK_FAN_IN  # 5000 one-row chunks otherwise
    big = TableRows(SCHEMA)
    big.append(_rows(range(100_000)))  # a loaded table, then flushes
    for n in range(100_000, 100_500):
        big.append(_rows(range(n, n + 1)))
    assert big.chunk_count < 3 * CHUNK_FAN_IN and big.row(99_999)["n"] == 99_999 and big.row(100_499)["n"] == 100_499


def test_an_empty_table_has_no_rows_and_queries_answer_nothing(tmp_path: Path) -> None:
    rows = TableRows(SCHEMA)
    assert rows.append(_rows(range(0))) == 0 and len(rows) == 0 and rows.table().num_rows == 0
    assert Catalog(LocalObjectStore(tmp_path)).query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [0]


def test_duckdb_queries_every_committed_row_and_the_same_after_a_restart(tmp_path: Path) -> None:
    catalog = Catalog(LocalObjectStore(tmp_path))
    for n in range(40):
        batch = Batch()
        batch.add("events", event_row("site-a", f"1.2.3.{n % 7}", InstanceState.QUEUED))
        batch.add("events", event_row("site-b", f"1.2.3.{n}", InstanceState.DONE))
        catalog.commit(batch)
    sql = "SELECT source, count(*) AS n, count(DISTINCT sop_uid) AS sops FROM events GROUP BY source ORDER BY source"
    expected = {"source": ["site-a", "site-b"], "n": [40, 40], "sops": [7, 40]}
    assert catalog.query(sql).to_pydict() == expected
    assert catalog.current.rows["events"].chunk_count < 40
    assert Catalog(LocalObjectStore(tmp_path)).query(sql).to_pydict() == expected
