"""The one place the client sends HTTP: retries with backoff and jitter, and HTTP answers → exceptions.

Retried: 429, 502, 503, 504 and connection errors or timeouts, waiting at least what `Retry-After` asks.
A retried upload cannot duplicate anything: the platform answers a re-upload of the same content as
accepted and not created.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from qure_ray.client.errors import (
    AuthenticationError,
    NotFound,
    QureClientError,
    RequestError,
    ServerBusy,
    ServerError,
)

logger = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry a request the platform could not take yet."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 300.0
    """A `Retry-After` longer than this is cut to it."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(f"{self} is not a usable retry policy: max_attempts >= 1, 0 <= base <= max delay")

    def delay_s(self, retry: int, *, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...): exponential with jitter in [half, full],
        or, when the server said `Retry-After`, that (capped) plus up to 10 % so clients do not return at once."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s) * rng.uniform(1.0, 1.1)
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return rng.uniform(backoff / 2, backoff)


def retry_after_s(response: httpx.Response, *, now_s: float | None = None) -> float | None:
    """The `Retry-After` header in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


async def send(
    client: httpx.AsyncClient,
    make_request: Callable[[], httpx.Request],
    *,
    what: str,
    policy: RetryPolicy,
    rng: random.Random,
    stream: bool = False,
) -> httpx.Response:
    """Send the request `make_request` builds (anew for each attempt) until it is not busy; raise `ServerBusy`
    when every attempt was. With `stream`, the caller reads and closes the response."""
    last = ""
    for attempt in range(1, policy.max_attempts + 1):
        wait_hint: float | None = None
        try:
            response = await client.send(make_request(), stream=stream)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            last = f"HTTP {response.status_code}"
            wait_hint = retry_after_s(response)
            await response.aclose()
        if attempt < policy.max_attempts:
            delay = policy.delay_s(attempt, retry_after_s=wait_hint, rng=rng)
            logger.info("%s: %s; retry %d of %d in %.1f s", what, last, attempt, policy.max_attempts - 1, delay)
            await asyncio.sleep(delay)
    raise ServerBusy(what, attempts=policy.max_attempts, last=last)


def message_of(response: httpx.Response) -> str:
    """The platform's human-readable `message`, or the start of the body when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:200]


def error_for(response: httpx.Response, *, uid: str = "") -> QureClientError:
    """The exception for a platform answer that is an error (401/403, 404, other 4xx, 5xx)."""
    status, message = response.status_code, message_of(response)
    if status in (401, 403):
        return AuthenticationError(message, status=status)
    if status == 404:
        return NotFound(uid or response.request.url.path, message)
    if status < 500:
        return RequestError(message, status=status)
    return ServerError(message, status=status)
