from __future__ import annotations

import asyncio

from qure_ray.pipeline.priority_queue import UniquePriorityQueue
from qure_ray.records import InstanceRef


def ref(uid: str, priority: int = 0) -> InstanceRef:
    return InstanceRef(source="s", sop_uid=uid, object_key=f"k/{uid}", priority=priority)


def test_priority_then_fifo_and_no_duplicates() -> None:
    async def scenario() -> list[str | None]:
        queue = UniquePriorityQueue()
        assert await queue.put(ref("1.1"))
        assert await queue.put(ref("1.2"))
        assert not await queue.put(ref("1.1"))
        assert await queue.put(ref("1.3", priority=-1))
        out = [await queue.get(timeout_s=0.1) for _ in range(4)]
        return [r.sop_uid if r else None for r in out]

    assert asyncio.run(scenario()) == ["1.3", "1.1", "1.2", None]


def test_waiting_getter_wakes_on_put() -> None:
    async def scenario() -> str | None:
        queue = UniquePriorityQueue()
        getter = asyncio.create_task(queue.get(timeout_s=5))
        await asyncio.sleep(0.05)
        await queue.put(ref("2.1"))
        got = await getter
        return got.sop_uid if got else None

    assert asyncio.run(scenario()) == "2.1"
