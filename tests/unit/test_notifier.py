"""`WebhookNotifier`: what it sends where, and how many attempts it makes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import httpx
from ray.serve.handle import DeploymentHandle

from qure_ray.egress import parse_networks
from qure_ray.pipeline.notifier import WebhookNotifier
from qure_ray.records import Notification, Webhook
from qure_ray.storage.catalog import Batch


def _notification(*, attempts_made: int = 0) -> Notification:
    """A final result for a webhook on localhost: refused unless loopback is allowed, so attempts fail fast."""
    return Notification(
        result_row_id="r1", source="site-a", uid="1.2.3", study_uid="1.2", series_uid="1.2.4", usecase="qxr",
        status="done", triage_status=None, finished_at=datetime.now(UTC), attempts_made=attempts_made,
        webhook=Webhook(source="site-a", url="http://localhost:9/hook", secret="s" * 32),
    )  # fmt: skip


def test_the_notifier_refuses_a_host_that_resolves_inside_and_records_why() -> None:
    notification = _notification()
    notifier = WebhookNotifier(cast(DeploymentHandle, None), results_base_url="http://x", max_attempts=1)

    async def post(allowed: str) -> tuple[int | None, str]:
        notifier.allowed_networks = parse_networks("X", allowed)
        async with httpx.AsyncClient(timeout=2) as client:
            return await notifier._post(client, notification, b"{}")

    status, error = asyncio.run(post(""))
    assert status is None and error.startswith("refused: host 'localhost' is 127.0.0.1")
    status, error = asyncio.run(post("127.0.0.0/8"))  # allowed: it is tried (nothing listens on port 9)
    assert status is None and "refused" not in error and "ConnectError" in error


def test_a_resumed_notification_makes_only_the_attempts_left() -> None:
    recorded: list[dict[str, object]] = []

    async def write(batch: Batch) -> None:
        recorded.extend(batch.rows["webhook_deliveries"])

    catalog = SimpleNamespace(write=SimpleNamespace(remote=write))
    notifier = WebhookNotifier(cast(DeploymentHandle, catalog), results_base_url="http://x", max_attempts=3,
                               base_delay_s=0.0)  # fmt: skip
    for made, expected in ((1, [(2, "retrying"), (3, "gave_up")]), (5, [(3, "gave_up")])):
        recorded.clear()
        notification = _notification(attempts_made=made)

        async def deliver(notification: Notification = notification) -> None:
            async with httpx.AsyncClient(timeout=2) as client:
                await notifier._deliver(client, notification)

        asyncio.run(deliver())
        assert [(row["attempt"], row["outcome"]) for row in recorded] == expected
