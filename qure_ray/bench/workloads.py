"""The measured HTTP and S3 workloads: uploads through results, uploads only, bare S3 PUTs, result lookups
(the bare model is timed in `qure_ray.models.timing`).

Every HTTP workload runs C concurrent clients (asyncio + one aiohttp session) over a shared list of work and
records one latency per item; throughput is items over wall time. aiohttp, not httpx: on a small machine the
load generator shares the CPU with the server, and httpx took about twice the CPU per request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import numpy as np

from qure_ray.bench.inbox import ResultInbox
from qure_ray.dicom.multipart import dicom_multipart
from qure_ray.dicom.stow import read_store_response
from qure_ray.storage.object_store import ObjectStore

RESULT_WAIT_S = 300.0
"""How long an end-to-end client waits for its result's webhook before the benchmark fails, saying so."""
T = TypeVar("T")


@dataclass(frozen=True)
class Timed:
    """Latencies (seconds) of `count` items done in `wall_s` seconds."""

    latencies_s: list[float]
    wall_s: float
    bytes_sent: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def per_s(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


async def _clients(
    items: Sequence[T],
    concurrency: int,
    one: Callable[[aiohttp.ClientSession, T], Awaitable[None]],
    *,
    bytes_sent: int = 0,
) -> Timed:
    pending = list(items)
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as client:

        async def worker() -> None:
            while pending:
                item = pending.pop()
                started = time.perf_counter()
                await one(client, item)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return Timed(latencies, wall, bytes_sent)


async def _request(
    client: aiohttp.ClientSession, method: str, url: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, str, float]:
    """Status, body text and Retry-After (s, 1 if absent) of one request; the body is read whole, as a
    partner's client would."""
    async with client.request(method, url, data=body, headers=headers) as response:
        return response.status, await response.text(), float(response.headers.get("Retry-After", "1"))


def _run(work: Coroutine[Any, Any, Timed]) -> Timed:
    """Run the clients to completion, also from inside a running event loop (a notebook's kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def ingest(
    url: str, items: Sequence[tuple[str, bytes]], *, concurrency: int, headers: dict[str, str] | None = None
) -> Timed:
    """STOW-RS uploads of (SOPInstanceUID, DICOM bytes), one instance per request (`url` is a DICOMweb
    `.../studies` endpoint). An upload counts once the response says that instance was stored."""

    async def one(client: aiohttp.ClientSession, item: tuple[str, bytes]) -> None:
        sop_uid, data = item
        body, content_type = dicom_multipart([data])
        for _ in range(100):
            status, text, retry_after_s = await _request(
                client, "POST", url, body, {**(headers or {}), "Content-Type": content_type}
            )
            if status != 503:
                break
            await asyncio.sleep(retry_after_s)
        if status != 200 or not _stored(text, sop_uid):
            raise RuntimeError(f"STOW to {url} answered {status}, not storing {sop_uid}: {text[:300]}")

    return _run(_clients(items, concurrency, one, bytes_sent=_size(items)))


def _size(items: Sequence[tuple[str, bytes]]) -> int:
    return sum(len(data) for _, data in items)


def _stored(response: str, sop_uid: str) -> bool:
    """Whether a Store Instances Response says `sop_uid` was stored: it references that one instance and lists
    no failed one. A peer answering 200 with a FailedSOPSequence would otherwise count as fast for storing
    nothing."""
    said = read_store_response(response)
    return said.stored == [sop_uid] and not said.failed


def end_to_end(
    base_url: str,
    items: Sequence[tuple[str, bytes]],
    *,
    concurrency: int,
    headers: dict[str, str],
    inbox: ResultInbox,
) -> Timed:
    """Upload each image, wait for its result's webhook at `inbox` (registered for this source), then ask
    `GET /results` once: latency is upload → result 200."""

    async def one(client: aiohttp.ClientSession, item: tuple[str, bytes]) -> None:
        await _through_result(client, base_url, item[0], [item[1]], headers=headers, inbox=inbox)

    return _run(_clients(items, concurrency, one, bytes_sent=_size(items)))


def series_end_to_end(
    base_url: str,
    items: Sequence[tuple[str, list[bytes]]],
    *,
    concurrency: int,
    headers: dict[str, str],
    inbox: ResultInbox,
) -> Timed:
    """Each (SeriesInstanceUID, its instances) as a PACS forwards a series: one STOW-RS request, then
    `GET /compute` (the Qure API's "every slice is uploaded"); wait for the series result's webhook, then ask
    `GET /results` once: latency is upload → result 200."""

    async def one(client: aiohttp.ClientSession, item: tuple[str, list[bytes]]) -> None:
        await _through_result(client, base_url, item[0], item[1], headers=headers, inbox=inbox, compute=True)

    return _run(_clients(items, concurrency, one, bytes_sent=sum(len(part) for _, parts in items for part in parts)))


async def _through_result(
    client: aiohttp.ClientSession,
    base_url: str,
    uid: str,
    parts: list[bytes],
    *,
    headers: dict[str, str],
    inbox: ResultInbox,
    compute: bool = False,
) -> None:
    """Upload `parts` in one request, start series `uid` when `compute`, wait for the webhook of `uid`'s result,
    then read it once."""
    body, content_type = dicom_multipart(parts)
    status, text, _ = await _request(
        client, "POST", f"{base_url}/studies", body, {**headers, "Content-Type": content_type}
    )
    if status != 200:
        raise RuntimeError(f"upload answered {status}: {text[:300]}")
    if compute:
        status, text, _ = await _request(client, "GET", f"{base_url}/compute/{uid}", None, headers)
        if status not in (200, 304):
            raise RuntimeError(f"compute answered {status}: {text[:300]}")
    await inbox.wait(uid, timeout_s=RESULT_WAIT_S)
    status, text, _ = await _request(client, "GET", f"{base_url}/results/{uid}", None, headers)
    if status != 200:
        raise RuntimeError(f"result answered {status}: {text[:300]}")


def store_puts(store: ObjectStore, items: Sequence[bytes], *, concurrency: int) -> Timed:
    """Bare PUTs of the same payloads with the platform's own S3 client from `concurrency` threads: what the
    object store alone takes, the ceiling of any ingest that keeps its originals there."""

    def one(numbered: tuple[int, bytes]) -> float:
        started = time.perf_counter()
        store.put(f"store-limit/{numbered[0]:06d}.dcm", numbered[1])
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, enumerate(items)))
    return Timed(latencies, time.perf_counter() - started, sum(len(item) for item in items))


def lookups(
    base_url: str, uids: Sequence[str], *, requests: int, concurrency: int, headers: dict[str, str], seed: int = 0
) -> Timed:
    """`GET /results/{uid}` of random stored results (`seed`: which; a warm-up takes another than the round)."""
    rng = random.Random(seed)
    picks = [rng.choice(uids) for _ in range(requests)]

    async def one(client: aiohttp.ClientSession, uid: str) -> None:
        status, text, _ = await _request(client, "GET", f"{base_url}/results/{uid}", None, headers)
        if status != 200:
            raise RuntimeError(f"lookup answered {status}: {text[:300]}")

    return _run(_clients(picks, concurrency, one))
