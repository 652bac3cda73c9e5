"""`TableRows`: every row of one append-only catalog table, in memory as Arrow, numbered in arrival order.

The catalog keeps its rows once, here: the newest-row indexes (`qure_ray.storage.latest`) point into them by row
number, and DuckDB queries them in place (`Catalog.query`), with no copy of its own. Each flush appends a few
rows; to keep the chunk count low (DuckDB spends about 60 µs per Arrow chunk it scans), the newest
`CHUNK_FAN_IN` chunks are combined into one whenever together they are no larger than the chunk before them,
so chunks form tiers of 1, 16, 256, ... flushes and a row is copied about once per tier.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import pyarrow as pa

CHUNK_FAN_IN = 16


class TableRows:
    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._chunks: list[pa.Table] = []
        self._columns: list[list[pa.Array]] = []
        """Per chunk, its columns as single arrays (a scalar read per column is the fast way to one row)."""
        self._starts: list[int] = []
        """Per chunk, the number of its first row."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def chunk_count(self) -> int:
        return len(self._chunks)

    def append(self, arrow: pa.Table) -> int:
        """Add rows (in this table's schema); returns the number of the first one."""
        first = self._count
        if len(arrow):
            self._push(first, arrow.combine_chunks())
            self._count += len(arrow)
            self._combine_newest()
        return first

    def row(self, number: int) -> dict[str, Any]:
        """Row `number` as a dict of column → value."""
        chunk = bisect_right(self._starts, number) - 1
        if chunk < 0 or number >= self._count:
            raise IndexError(f"no row {number} in a table of {self._count}")
        offset = number - self._starts[chunk]
        return {
            name: column[offset].as_py() for name, column in zip(self.schema.names, self._columns[chunk], strict=True)
        }

    def table(self) -> pa.Table:
        """Every row, without copying (one Arrow chunk per stored chunk)."""
        return pa.concat_tables(self._chunks) if self._chunks else self.schema.empty_table()

    def _push(self, start: int, chunk: pa.Table) -> None:
        self._chunks.append(chunk)
        self._columns.append([column.chunk(0) for column in chunk.columns])  # combined: one chunk each
        self._starts.append(start)

    def _combine_newest(self) -> None:
        while len(self._chunks) >= CHUNK_FAN_IN:
            newest = self._chunks[-CHUNK_FAN_IN:]
            rows = sum(len(chunk) for chunk in newest)
            if len(self._chunks) > CHUNK_FAN_IN and rows > len(self._chunks[-CHUNK_FAN_IN - 1]):
                return
            start = self._starts[-CHUNK_FAN_IN]
            del self._chunks[-CHUNK_FAN_IN:], self._columns[-CHUNK_FAN_IN:], self._starts[-CHUNK_FAN_IN:]
            self._push(start, pa.concat_tables(newest).combine_chunks())
