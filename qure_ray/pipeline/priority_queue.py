"""`UniquePriorityQueue`: the in-memory heart of the ImageQueue actor — asyncio, no Ray.

Lower `priority` first, then first-in first-out. An instance is in the queue at most once, so replaying
the catalog into it (after a restart) never duplicates work. Memory: one small `InstanceRef` per item.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from qure_ray.records import InstanceRef


class UniquePriorityQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, InstanceRef]] = []
        self._keys: set[tuple[str, str]] = set()
        self._counter = itertools.count()
        self._available = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._heap)

    async def put(self, ref: InstanceRef) -> bool:
        """Add `ref`; False when the same instance is already waiting."""
        key = (ref.source, ref.sop_uid)
        if key in self._keys:
            return False
        self._keys.add(key)
        heapq.heappush(self._heap, (ref.priority, next(self._counter), ref))
        async with self._available:
            self._available.notify()
        return True

    async def get(self, *, timeout_s: float) -> InstanceRef | None:
        """The next instance, or None when none arrives within `timeout_s`."""
        async with self._available:
            try:
                await asyncio.wait_for(self._available.wait_for(lambda: bool(self._heap)), timeout_s)
            except TimeoutError:
                return None
            _, _, ref = heapq.heappop(self._heap)
        self._keys.discard((ref.source, ref.sop_uid))
        return ref
