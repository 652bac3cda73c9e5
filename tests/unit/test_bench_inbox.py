"""`ResultInbox`: end-to-end clients learn of their results from the platform's signed webhooks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from datetime import UTC, datetime

import httpx
import pytest

from qure_ray.bench.inbox import MAX_BODY_BYTES, ResultInbox
from qure_ray.client.webhooks import SIGNATURE_HEADER, sign
from qure_ray.records import Notification, Webhook

SECRET = "bench-inbox-secret-0123456789"


def _notify(inbox: ResultInbox, uid: str, *, secret: str = SECRET, per_series: bool = False) -> int:
    """POST what the platform's notifier sends for `uid`'s final result (`Notification.payload`), signed."""
    notification = Notification(
        result_row_id="r", source="bench", uid=uid, study_uid="1.2.3", series_uid=uid if per_series else "1.2.3.9",
        usecase="qxr", status="done", triage_status=None, finished_at=datetime.now(UTC),
        webhook=Webhook(source="bench", url=inbox.url, secret=secret),
    )  # fmt: skip
    body = json.dumps(notification.payload("http://platform")).encode()
    return httpx.post(inbox.url, content=body, headers={SIGNATURE_HEADER: sign(body, secret)}).status_code


@pytest.mark.timeout(20)  # a client not woken by its webhook would wait out its 60 s
def test_a_client_waiting_for_its_result_is_woken_by_its_webhook_and_only_by_its_own() -> None:
    with ResultInbox(SECRET) as inbox:

        async def scenario() -> list[str]:
            woken: list[str] = []

            async def client(uid: str) -> None:
                await inbox.wait(uid, timeout_s=60)
                woken.append(uid)

            waiting = [asyncio.create_task(client(uid)) for uid in ("1.2.3.1", "1.2.3.2")]
            # from a thread of its own, as the platform's POST arrives: nothing else wakes this loop
            threading.Timer(0.2, _notify, (inbox, "1.2.3.2")).start()
            await waiting[1]
            assert woken == ["1.2.3.2"]  # the other client still waits
            threading.Timer(0.2, _notify, (inbox, "1.2.3.1")).start()
            await waiting[0]
            return woken

        assert asyncio.run(scenario()) == ["1.2.3.2", "1.2.3.1"]


@pytest.mark.timeout(60)
def test_a_webhook_that_arrives_before_its_client_waits_is_kept() -> None:
    with ResultInbox(SECRET) as inbox:
        assert _notify(inbox, "1.2.3.4", per_series=True) == 204  # a series result: its SeriesInstanceUID
        asyncio.run(inbox.wait("1.2.3.4", timeout_s=1))


def test_unsigned_wrongly_signed_unreadable_and_oversized_requests_are_refused_and_wake_nobody() -> None:
    with ResultInbox(SECRET) as inbox:
        assert _notify(inbox, "1.2.3.5", secret="another-secret-0123456789") == 401
        assert httpx.post(inbox.url, content=b'{"sop_instance_uid": "1.2.3.5"}').status_code == 401
        garbage = b"not json"
        assert (
            httpx.post(inbox.url, content=garbage, headers={SIGNATURE_HEADER: sign(garbage, SECRET)}).status_code == 400
        )
        too_big = b"x" * (MAX_BODY_BYTES + 1)
        assert (
            httpx.post(inbox.url, content=too_big, headers={SIGNATURE_HEADER: sign(too_big, SECRET)}).status_code == 413
        )
        assert inbox.refused == 3
        with pytest.raises(RuntimeError, match=r"no webhook for 1\.2\.3\.5 within 0\.2 s .* \(3 requests refused\)"):
            asyncio.run(inbox.wait("1.2.3.5", timeout_s=0.2))


@pytest.mark.parametrize(
    ("length", "status"), [("abc", 400), ("-1", 400), (None, 411)], ids=["not-a-number", "negative", "missing"]
)
@pytest.mark.timeout(20)
def test_a_request_without_a_readable_length_is_answered_and_closed(length: str | None, status: int) -> None:
    with ResultInbox(SECRET) as inbox:
        with socket.create_connection(("127.0.0.1", inbox.port), timeout=10) as connection:
            header = "" if length is None else f"Content-Length: {length}\r\n"
            connection.sendall(f"POST /results-final HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode())
            answer = connection.recv(4096).decode()
        assert answer.startswith(f"HTTP/1.1 {status}") and "Connection: close" in answer
