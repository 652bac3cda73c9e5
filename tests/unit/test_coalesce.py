"""`Coalescer`: requests that arrive while a call is out go together in the next one, each gets its own answer;
and the catalog's side of it (`lookup_results`)."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest

from qure_ray.api.coalesce import Coalescer
from qure_ray.records import InstanceRecord, InstanceState
from qure_ray.storage import Catalog, LocalObjectStore, received_rows
from qure_ray.storage.lookup import ResultLookup, lookup_results
from tests.unit.test_catalog import make_record


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


async def _one_call_out(remote: Remote) -> tuple[Coalescer[str, str], asyncio.Task[str]]:
    """A coalescer of one call at a time, with the call for "a" sent and held by `remote`."""
    coalescer = Coalescer(remote.call_many, max_in_flight=1)
    first = asyncio.create_task(coalescer("a"))
    await _settle()
    return coalescer, first


def test_a_lone_request_goes_at_once_and_later_ones_ride_together() -> None:
    async def scenario() -> None:
        remote = Remote()
        coalescer, first = await _one_call_out(remote)
        assert remote.batches == [["a"]]  # sent without waiting for company
        others = [asyncio.create_task(coalescer(item)) for item in "bcdef"]
        await _settle()
        assert remote.batches == [["a"]]  # they wait while the first call is out
        remote.release.set()
        assert await first == "answer to a"
        assert await asyncio.gather(*others) == [f"answer to {item}" for item in "bcdef"]
        assert remote.batches == [["a"], ["b", "c", "d", "e", "f"]]  # two calls

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
        coalescer, first = await _one_call_out(remote)
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
        coalescer, first = await _one_call_out(remote)
        gone, kept = asyncio.create_task(coalescer("b")), asyncio.create_task(coalescer("c"))
        await _settle()
        gone.cancel()  # the client went away
        remote.release.set()
        assert (await first, await kept) == ("answer to a", "answer to c")
        assert gone.cancelled()

    asyncio.run(scenario())


def test_a_request_the_remote_answers_with_an_exception_fails_alone() -> None:
    async def call_many(items: list[str]) -> list[str | Exception]:
        return [ValueError(f"row of {item} unreadable") if item == "bad" else f"answer to {item}" for item in items]

    async def scenario() -> None:
        coalescer = Coalescer(call_many, max_in_flight=1)
        outcomes = await asyncio.gather(*(coalescer(item) for item in ["a", "bad", "c"]), return_exceptions=True)
        assert outcomes[0] == "answer to a" and outcomes[2] == "answer to c"
        assert isinstance(outcomes[1], ValueError) and "bad" in str(outcomes[1])

    asyncio.run(scenario())


class BrokenRow(Catalog):
    """A catalog one of whose instances cannot be read back (a row this code version does not understand)."""

    def instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        if sop_uid == "1.2.3.66":
            raise KeyError("received_at")
        return super().instance(source, sop_uid)


def test_lookups_sent_together_answer_each_and_a_failing_one_only_fails_itself(tmp_path: Path) -> None:
    catalog = BrokenRow(LocalObjectStore(tmp_path))
    catalog.commit(received_rows(make_record("1.2.3.5")))
    answers = lookup_results(catalog, [("site-a", "1.2.3.5"), ("site-a", "1.2.3.66"), ("site-b", "1.2.3.5")])
    assert isinstance(answers[0], ResultLookup) and answers[0].state is InstanceState.QUEUED
    assert isinstance(answers[1], KeyError)
    assert isinstance(answers[2], ResultLookup) and not answers[2].found  # another source's instance: unknown


class StrictError(Exception):
    """A constructor pickle cannot call with the exception's `args` (keyword-only arguments)."""

    def __init__(self, *, depth: int) -> None:
        super().__init__(f"depth {depth}")


class UnpicklableFailure(Catalog):
    def instance(self, source: str, sop_uid: str) -> InstanceRecord | None:
        raise StrictError(depth=3)


def test_a_failure_that_cannot_be_rebuilt_by_the_ingress_travels_as_a_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError):  # what the ingress would meet unpickling it: the whole batch would fail
        pickle.loads(pickle.dumps(StrictError(depth=3)))
    answers = lookup_results(UnpicklableFailure(LocalObjectStore(tmp_path)), [("site-a", "1.2.3.5")])
    (answer,) = pickle.loads(pickle.dumps(answers))
    assert isinstance(answer, RuntimeError) and str(answer) == "StrictError: depth 3"
