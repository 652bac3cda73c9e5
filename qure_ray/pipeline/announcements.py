"""`Announcements`: the catalog's count of writes that recorded a final result for a source with a webhook, and
the notifier's long poll on it. Its own module so that the catalog actor does not import the notifier (and
with it httpx and the egress checks) for a counter."""

from __future__ import annotations

import asyncio
import contextlib

LONG_POLL_S = 2.0
"""How long one `announced_after` call may wait in the catalog. Short: Serve lets a replica that is being
replaced finish its calls first, and a rolling update of the catalog would wait for this one."""


class Announcements:
    """The catalog's side of the notifier's long poll: how many writes have recorded a final result for a source
    with a webhook, and a wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._next = asyncio.Event()

    def note(self) -> None:
        self.count += 1
        self._next.set()
        self._next = asyncio.Event()

    async def after(self, seen: int, timeout_s: float) -> int:
        """The count, as soon as it differs from `seen` (at once if it already does), else after `timeout_s`."""
        if seen == self.count:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._next.wait()
        return self.count
