"""`Coalescer`: requests that arrive while a call is out go together in the next one, each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from qure_ray.api.coalesce import Coalescer


class Remote:
    """A batched remote method that holds each call until released, and records the batches it was sent."""

    def __init__(self, *, fail_on: str | None = None, drop_one: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on
        self.drop_one = drop_one

    async def call_many(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        await self.release.wait()
        if self.fail_on in items:
            raise ConnectionError("the catalog went away")
        answers = [f"answer to {item}" for item in items]
        return answers[1:] if self.drop_one else answers


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lone_request_goes_at_once_and_later_ones_ride_together() -> None:
    async def scenario() -> None:
        remote = Remote()
        coalescer = Coalescer(remote.call_many, max_in_flight=1)
        first = asyncio.create_task(coalescer("a"))
        await _settle()
        assert remote.batches == [["a"]]  # sent without waiting for company
        others = [asyncio.create_task(coalescer(item)) for item in "bcdef"]
        await _settle()
        assert remote.batches == [["a"]]  # they wait while the first call is out
        remote.release.set()
        assert await first == "answer to a"
        assert await asyncio.gather(*others) == [f"answer to {item}" for item in "bcdef"]
        assert remote.batches == [["a"], ["b", "c", "d", "e", "f"]] and coalescer.calls_made == 2

    asyncio.run(scenario())


def test_batches_are_split_at_max_batch_and_calls_overlap_up_to_max_in_flight() -> None:
    async def scenario() -> None:
        remote = Remote()
        coalescer = Coalescer(remote.call_many, max_batch=3, max_in_flight=2)
        tasks = [asyncio.create_task(coalescer(str(n))) for n in range(9)]
        await _settle()
        assert remote.batches == [["0"], ["1"]]  # two calls out at once; the rest wait
        remote.release.set()
        assert await asyncio.gather(*tasks) == [f"answer to {n}" for n in range(9)]
        assert remote.batches[2:] == [["2", "3", "4"], ["5", "6", "7"], ["8"]]

    asyncio.run(scenario())


@pytest.mark.parametrize("remote", [Remote(fail_on="b"), Remote(drop_one=True)], ids=["call fails", "answers missing"])
def test_a_failed_call_fails_each_of_its_requests_and_the_next_call_still_goes(remote: Remote) -> None:
    async def scenario() -> None:
        coalescer = Coalescer(remote.call_many, max_in_flight=1)
        first = asyncio.create_task(coalescer("a"))
        await _settle()
        doomed = [asyncio.create_task(coalescer(item)) for item in "bc"]
        await _settle()
        remote.release.set()
        outcomes = await asyncio.gather(first, *doomed, return_exceptions=True)
        assert all(isinstance(outcome, ConnectionError | RuntimeError) for outcome in outcomes[1:])
        remote.fail_on, remote.drop_one = None, False
        assert await coalescer("d") == "answer to d"

    asyncio.run(scenario())


def test_a_request_cancelled_while_waiting_leaves_the_others_their_answers() -> None:
    async def scenario() -> None:
        remote = Remote()
        coalescer = Coalescer(remote.call_many, max_in_flight=1)
        first = asyncio.create_task(coalescer("a"))
        await _settle()
        gone, kept = asyncio.create_task(coalescer("b")), asyncio.create_task(coalescer("c"))
        await _settle()
        gone.cancel()  # the client went away
        remote.release.set()
        assert (await first, await kept) == ("answer to a", "answer to c")
        assert gone.cancelled()

    asyncio.run(scenario())
