"""`WebhookNotifier`: tells each source, at its registered URL, that a result is final.

The Qure API has no callbacks; partners that register one (`PUT /webhooks`) get a POST per final result
with UIDs, status and the result URL (never PHI), signed with HMAC-SHA256 in `X-Qure-Signature` (verify with
`qure_ray.client.webhooks.verify_signature`). Which results still need announcing is a catalog query
(final results since the webhook was registered, with no `delivered` or `gave_up` attempt), so nothing is
lost across restarts; every attempt is recorded in `webhook_deliveries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
from ray.serve.handle import DeploymentHandle

from qure_ray import metrics
from qure_ray.client.webhooks import SIGNATURE_HEADER, sign
from qure_ray.egress import EgressRefused, IPNetwork, checked_client
from qure_ray.records import DeliveryOutcome, Notification
from qure_ray.sealing import CLEAR, SealError, SecretSealer
from qure_ray.storage.catalog import delivery_row

logger = logging.getLogger(__name__)

POLL_S = 1.0
"""Rounds without a `wake`: a safety net (an announcement lost to a catalog restart) and retries' rounds."""
MIN_ROUND_GAP_S = 0.05
"""Rounds that `wake` asks for come at most this often: results recorded together are announced in one round."""
BATCH = 100
MAX_IN_FLIGHT = 1000
"""Deliveries at once (most of them waiting out a retry's pause): one partner whose endpoint fails holds up
only its own, never the others' (each round asks for results not in flight)."""
RECORD_RETRY_MAX_S = 60.0
TIMEOUT_S = 10.0
ATTEMPT_TIMEOUT_S = 30.0
"""The most one delivery attempt may take in all: `TIMEOUT_S` bounds each read, not a reply sent slowly."""
MAX_CONNECTIONS = 100


class WebhookNotifier:
    def __init__(
        self,
        catalog: DeploymentHandle,
        *,
        results_base_url: str,
        max_attempts: int,
        allowed_networks: Sequence[IPNetwork] = (),
        secret_sealer: SecretSealer = CLEAR,
        base_delay_s: float = 1.0,
    ) -> None:
        self.catalog = catalog
        self.allowed_networks = allowed_networks
        self.secret_sealer = secret_sealer
        self.results_base_url = results_base_url
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        """The running deliveries by result row id (the event loop holds its tasks only weakly)."""
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """A final result was just recorded: the next round starts now, not at the next poll. A partner waiting
        on its webhook learns of the result within milliseconds instead of up to `POLL_S` later."""
        self._woken.set()

    async def listen(self) -> None:
        """Wake a round whenever the catalog records a final result for a source with a webhook, whoever wrote it:
        this job manager, an ingress settling what no use case reads, the job manager a rolling update replaces.
        A long poll of the catalog (`Announcements`)."""
        seen = -1  # the first call answers at once with the catalog's count
        while True:
            try:
                count: int = await self.catalog.announced_after.remote(seen)
            except Exception as exc:  # the catalog is briefly unavailable (a restart): the poll covers meanwhile
                logger.warning("waiting for the catalog's result announcements failed, retrying: %s", exc)
                await asyncio.sleep(POLL_S)
                continue
            if seen >= 0 and count != seen:  # a restarted catalog counts from 0 again: a change all the same
                self.wake()
            seen = count

    async def _next_round(self, previous: float) -> float:
        """Wait for a `wake` or `POLL_S`, then at least until `MIN_ROUND_GAP_S` after the previous round."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_S):  # not `wait_for`: in 3.11 it can swallow a cancel (shutdown)
                await self._woken.wait()
        await asyncio.sleep(max(0.0, previous + MIN_ROUND_GAP_S - time.monotonic()))
        self._woken.clear()
        return time.monotonic()

    async def run(self) -> None:
        await self.reseal_secrets()
        listener = asyncio.get_running_loop().create_task(self.listen())
        try:
            await self._rounds()
        finally:
            listener.cancel()

    async def _rounds(self) -> None:
        async with self.http_client() as client:
            started = time.monotonic()
            while True:
                started = await self._next_round(started)
                room = min(BATCH, MAX_IN_FLIGHT - len(self._deliveries))
                if room <= 0:
                    continue
                try:
                    in_flight = frozenset(self._deliveries)
                    pending: list[Notification] = await self.catalog.undelivered.remote(room, in_flight)
                except Exception as exc:  # the catalog is briefly unavailable: the next round asks again
                    logger.warning("webhook round failed, retrying: %s", exc)
                    continue
                for notification in pending:  # none in flight: the catalog left those out
                    key = notification.result_row_id
                    self._deliveries[key] = asyncio.get_running_loop().create_task(self._deliver(client, notification))
                    self._deliveries[key].add_done_callback(lambda _, key=key: self._deliveries.pop(key, None))  # type: ignore[misc]

    def http_client(self) -> httpx.AsyncClient:
        """Deliveries' client: it connects only to addresses the egress policy allows (`checked_client`)."""
        return checked_client(self.allowed_networks, timeout_s=TIMEOUT_S, max_connections=MAX_CONNECTIONS)

    async def reseal_secrets(self) -> int:
        """Re-seal stored webhook secrets under the first `QURE_SECRETS_KEY` (after a rotation, or sealing ones
        stored in clear before a key was set); returns how many. Never in the way of deliveries: a failure is
        logged and the next start tries again."""
        resealed = 0
        try:
            stored: dict[str, str] = await self.catalog.stored_webhook_secrets.remote()
            for source, secret in stored.items():
                try:
                    replacement = self.secret_sealer.reseal(secret, source=source)
                except SealError as exc:  # its deliveries give up, saying why
                    logger.warning("webhook secret of source %s cannot be re-sealed: %s", source, exc)
                    continue
                if replacement is not None and await self.catalog.replace_webhook_secret.remote(
                    source, secret, replacement
                ):
                    resealed += 1
        except Exception as exc:  # the catalog is briefly unavailable
            logger.warning("re-sealing webhook secrets failed, next start tries again: %s", exc)
        if resealed:
            logger.info("re-sealed %d webhook secret(s) under the first QURE_SECRETS_KEY", resealed)
        return resealed

    async def _deliver(self, client: httpx.AsyncClient, notification: Notification) -> None:
        body = json.dumps(notification.payload(self.results_base_url), separators=(",", ":")).encode()
        try:
            secret = self.secret_sealer.open(notification.webhook.secret, source=notification.source)
        except SealError as exc:  # no attempt can be signed: give up at once, saying why
            await self._record(notification, self.max_attempts, DeliveryOutcome.GAVE_UP, None, str(exc))
            return
        # a restart resumes the count; at least one attempt, the last, when earlier runs used them all
        for attempt in range(min(notification.attempts_made, self.max_attempts - 1) + 1, self.max_attempts + 1):
            status_code, error = await self._post(client, notification, body, secret)
            delivered = status_code is not None and 200 <= status_code < 300
            if delivered:
                outcome = DeliveryOutcome.DELIVERED
                delay_s = (datetime.now(UTC) - notification.finished_at).total_seconds()
                metrics.histogram("qure_webhook_delay_seconds").observe(max(0.0, delay_s))
            else:
                outcome = DeliveryOutcome.GAVE_UP if attempt == self.max_attempts else DeliveryOutcome.RETRYING
            await self._record(notification, attempt, outcome, status_code, error)
            if outcome is not DeliveryOutcome.RETRYING:
                return
            await asyncio.sleep(self.base_delay_s * 2 ** (attempt - 1))

    async def _record(
        self, notification: Notification, attempt: int, outcome: DeliveryOutcome, status_code: int | None, error: str
    ) -> None:
        """Write the attempt's delivery row, trying again with doubling pauses while the catalog cannot take it:
        the delivery stays in flight meanwhile, so the partner is not POSTed again (once a second, as before)
        for an attempt already made. Should this process end first, the next one makes the attempt again."""
        metrics.counter("qure_webhook_deliveries_total").inc(1, tags={"outcome": outcome.value})
        row = delivery_row(notification, attempt=attempt, outcome=outcome, status_code=status_code, error=error)
        pause_s = self.base_delay_s
        while True:
            try:
                await self.catalog.write.remote(row)
                break
            except Exception as exc:
                logger.error("webhook attempt for %s could not be recorded, retrying in %.0f s: %s",
                             notification.uid, pause_s, exc)  # fmt: skip
                await asyncio.sleep(pause_s)
                pause_s = min(RECORD_RETRY_MAX_S, pause_s * 2)
        if outcome is DeliveryOutcome.GAVE_UP:
            logger.warning("gave up notifying source %s of %s: %s", notification.source, notification.uid, error)

    async def _post(
        self, client: httpx.AsyncClient, notification: Notification, body: bytes, secret: str
    ) -> tuple[int | None, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "qure_ray-webhooks",
            SIGNATURE_HEADER: sign(body, secret, int(time.time())),
        }
        try:
            # only the status is read: a partner's receiver that answers gigabytes, or a byte at a time, must
            # not fill or hold up the job manager, which delivers for every source
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                request = client.build_request("POST", notification.webhook.url, content=body, headers=headers)
                response = await client.send(request, stream=True)
                await response.aclose()
        except EgressRefused as exc:  # checked as it connects: the host may resolve elsewhere than at registration
            return None, f"refused: {exc}"[:500]
        except TimeoutError:
            return None, f"no answer within {ATTEMPT_TIMEOUT_S:g} s"
        except Exception as exc:  # httpx's and httpcore's errors, and those they do not wrap (an invalid URL)
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return response.status_code, ""
        return response.status_code, f"HTTP {response.status_code}"
