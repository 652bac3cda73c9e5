"""`LatestRows`: the newest row per key of one append-only catalog table, kept in memory as rows arrive.

The catalog's tables are logs (an instance's state is its newest `events` row, its metadata its newest
`instances` row). Answering "the newest row of this key" with a window query scans the whole table, which grows
with every image ever served; this index answers it in O(1) and is updated for each row as it becomes visible.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

Key = tuple[str, ...]


class LatestRows:
    """Per key, the position of the newest row ("newest" by `time_column`; on a tie, the row added last).

    Rows stay in the Arrow chunks they arrived in (`keep_rows=True`), or only `payload_columns` of the newest
    row are kept (cheaper, for tables like `events` that have many rows per key and few columns worth reading).
    """

    def __init__(
        self,
        key_columns: tuple[str, ...],
        time_column: str,
        *,
        keep_rows: bool = True,
        payload_columns: tuple[str, ...] = (),
    ) -> None:
        self.key_columns = key_columns
        self.time_column = time_column
        self.keep_rows = keep_rows
        self.payload_columns = payload_columns
        self._chunks: list[tuple[list[str], list[pa.Array]]] = []
        """Per added table: its column names and its columns, each one contiguous array."""
        self._newest: dict[Key, tuple[int, Any]] = {}
        """key → (time in µs, position `(chunk, row)` or the payload tuple)."""

    def add(self, arrow: pa.Table, keys: dict[Key, Key] | None = None) -> list[tuple[Key, Any | None, Any]]:
        """Index `arrow`'s rows; returns `(key, previous, current)` payloads for each key whose newest row changed
        (`previous` is None for a new key). `keys` interns key tuples shared with other indexes."""
        if not len(arrow):
            return []
        chunk = len(self._chunks)
        if self.keep_rows:
            self._chunks.append((arrow.column_names, [column.combine_chunks() for column in arrow.columns]))
        columns = [arrow.column(name).to_pylist() for name in self.key_columns]
        times = arrow.column(self.time_column).cast(pa.int64()).to_pylist()
        payloads = (
            zip(*(arrow.column(name).to_pylist() for name in self.payload_columns), strict=True)
            if self.payload_columns
            else iter(range(len(arrow)))
        )
        changed = []
        for row, (key, at, payload) in enumerate(zip(zip(*columns, strict=True), times, payloads, strict=True)):
            if keys is not None:
                key = keys.setdefault(key, key)
            current = self._newest.get(key)
            if current is not None and current[0] > at:
                continue
            value = (chunk, row) if self.keep_rows else payload
            self._newest[key] = (at, value)
            changed.append((key, None if current is None else current[1], value))
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
        """The newest row as a dict of column → value (`keep_rows` indexes only)."""
        found = self._newest.get(key)
        return self.row_at(found[1]) if found else None

    def row_at(self, position: tuple[int, int]) -> dict[str, Any]:
        # one scalar per column: a third of the CPU of slicing the table and converting the slice
        chunk, row = position
        names, columns = self._chunks[chunk]
        return {name: column[row].as_py() for name, column in zip(names, columns, strict=True)}
