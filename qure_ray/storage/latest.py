"""`LatestRows`: the newest row per key of one append-only catalog table, kept in memory as rows arrive.

The catalog's tables are logs (an instance's state is its newest `events` row, its metadata its newest
`instances` row). Answering "the newest row of this key" with a window query scans the whole table, which grows
with every image ever served; this index answers it in O(1) and is updated for each row as it becomes visible.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from qure_ray.storage.table_rows import TableRows

Key = tuple[str, ...]


class LatestRows:
    """Per key, the newest row ("newest" by `time_column`; on a tie, the row added last): its number in `rows`,
    or, without `rows`, only its `payload_columns` (cheaper, for tables like `events` that have many rows per key
    and few columns worth reading)."""

    def __init__(
        self,
        key_columns: tuple[str, ...],
        time_column: str,
        *,
        rows: TableRows | None = None,
        payload_columns: tuple[str, ...] = (),
    ) -> None:
        self.key_columns = key_columns
        self.time_column = time_column
        self.rows = rows
        self.payload_columns = payload_columns
        self._newest: dict[Key, tuple[int, Any]] = {}
        """key → (time in µs, row number in `rows` or the payload tuple)."""

    def add(
        self, arrow: pa.Table, first_row: int, keys: dict[Key, Key] | None = None
    ) -> list[tuple[Key, Any | None, Any]]:
        """Index `arrow`'s rows, numbered from `first_row` in `rows`; returns `(key, previous, current)` payloads
        (row numbers with `rows`) for each key whose newest row changed (`previous` is None for a new key).
        `keys` interns key tuples shared with other indexes."""
        if not len(arrow):
            return []
        columns = [arrow.column(name).to_pylist() for name in self.key_columns]
        times = arrow.column(self.time_column).cast(pa.int64()).to_pylist()
        payloads = (
            zip(*(arrow.column(name).to_pylist() for name in self.payload_columns), strict=True)
            if self.rows is None
            else iter(range(first_row, first_row + len(arrow)))
        )
        changed = []
        for key, at, payload in zip(zip(*columns, strict=True), times, payloads, strict=True):
            if keys is not None:
                key = keys.setdefault(key, key)
            current = self._newest.get(key)
            if current is not None and current[0] > at:
                continue
            self._newest[key] = (at, payload)
            changed.append((key, None if current is None else current[1], payload))
        return changed

    def __contains__(self, key: Key) -> bool:
        return key in self._newest

    def __len__(self) -> int:
        return len(self._newest)

    def newest_keys(self) -> list[Key]:
        return list(self._newest)

    def time(self, key: Key) -> int | None:
        """The newest row's time in µs since the epoch."""
        found = self._newest.get(key)
        return found[0] if found else None

    def payload(self, key: Key) -> Any | None:
        found = self._newest.get(key)
        return found[1] if found else None

    def row(self, key: Key) -> dict[str, Any] | None:
        """The newest row as a dict of column → value (indexes with `rows` only)."""
        found = self._newest.get(key)
        if found is None:
            return None
        if self.rows is None:
            raise TypeError("this index keeps only payloads, not rows")
        return self.rows.row(found[1])
