"""`WebhookNotifier`: what it sends where, and how many attempts it makes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from ray.serve.handle import DeploymentHandle

from qure_ray.client.webhooks import sign, verify_signature
from qure_ray.egress import parse_networks
from qure_ray.pipeline.announcements import Announcements
from qure_ray.pipeline.notifier import WebhookNotifier
from qure_ray.records import Notification, Webhook
from qure_ray.sealing import SecretSealer
from qure_ray.storage.catalog import Batch


def _notification(*, attempts_made: int = 0, secret: str = "s" * 32) -> Notification:
    """A final result for a webhook on localhost: refused unless loopback is allowed, so attempts fail fast."""
    return Notification(
        result_row_id="r1", source="site-a", uid="1.2.3", study_uid="1.2", series_uid="1.2.4", usecase="qxr",
        status="done", triage_status=None, finished_at=datetime.now(UTC), attempts_made=attempts_made,
        webhook=Webhook(source="site-a", url="http://localhost:9/hook", secret=secret),
    )  # fmt: skip


def test_the_notifier_refuses_a_host_that_resolves_inside_and_records_why() -> None:
    notification = _notification()
    notifier = WebhookNotifier(cast(DeploymentHandle, None), results_base_url="http://x", max_attempts=1)

    async def post(allowed: str) -> tuple[int | None, str]:
        notifier.allowed_networks = parse_networks("X", allowed)
        async with notifier.http_client() as client:
            return await notifier._post(client, notification, b"{}", notification.webhook.secret)

    status, error = asyncio.run(post(""))
    assert status is None and error.startswith("refused: host 'localhost' resolves to a loopback")
    status, error = asyncio.run(post("127.0.0.0/8"))  # allowed: it is tried (nothing listens on port 9)
    assert status is None and "refused" not in error and "ConnectError" in error


def _recording_catalog() -> tuple[DeploymentHandle, list[dict[str, object]]]:
    """A catalog handle whose `write` keeps the delivery rows it is given."""
    recorded: list[dict[str, object]] = []

    async def write(batch: Batch) -> None:
        recorded.extend(batch.rows["webhook_deliveries"])

    return cast(DeploymentHandle, SimpleNamespace(write=SimpleNamespace(remote=write))), recorded


def _deliver(notifier: WebhookNotifier, notification: Notification) -> None:
    async def deliver() -> None:
        async with notifier.http_client() as client:
            await notifier._deliver(client, notification)

    asyncio.run(deliver())


def test_a_resumed_notification_makes_only_the_attempts_left() -> None:
    catalog, recorded = _recording_catalog()
    notifier = WebhookNotifier(catalog, results_base_url="http://x", max_attempts=3, base_delay_s=0.0)
    for made, expected in ((1, [(2, "retrying"), (3, "gave_up")]), (5, [(3, "gave_up")])):
        recorded.clear()
        _deliver(notifier, _notification(attempts_made=made))
        assert [(row["attempt"], row["outcome"]) for row in recorded] == expected


def test_a_sealed_secret_signs_in_clear_and_one_sealed_with_another_key_gives_up_at_once() -> None:
    catalog, recorded = _recording_catalog()
    sealer = SecretSealer("k" * 32)
    notifier = WebhookNotifier(catalog, results_base_url="http://x", max_attempts=3, base_delay_s=0.0,
                               secret_sealer=sealer, allowed_networks=parse_networks("X", "127.0.0.0/8"))  # fmt: skip
    received: list[tuple[bytes, str]] = []

    async def post(client: object, notification: Notification, body: bytes, secret: str) -> tuple[int, str]:
        received.append((body, sign(body, secret, 1_700_000_000)))
        return 204, ""

    notifier._post = post  # type: ignore[method-assign]
    _deliver(notifier, _notification(secret=sealer.seal("partner-secret-1234", source="site-a")))
    ((body, signature),) = received
    verify_signature(body, signature, "partner-secret-1234", now=1_700_000_000)
    assert [(row["attempt"], row["outcome"]) for row in recorded] == [(1, "delivered")]

    recorded.clear()
    received.clear()
    _deliver(notifier, _notification(secret=SecretSealer("other" * 8).seal("partner-secret-1234", source="site-a")))
    assert received == []  # nothing can be signed: no POST, one final row saying why
    (row,) = recorded
    assert (row["attempt"], row["outcome"]) == (3, "gave_up") and "QURE_SECRETS_KEY" in str(row["error"])


def test_start_up_reseals_stored_secrets_under_the_first_key_unless_replaced_meanwhile() -> None:
    key = "an-operator-key-of-at-least-32-characters"
    old, rotated = SecretSealer(key), SecretSealer(f"{key}-new,{key}")
    stored = {
        "site-a": old.seal("secret-a-1234567890", source="site-a"),  # under the old key: re-sealed
        "site-b": rotated.seal("secret-b-1234567890", source="site-b"),  # already under the new key
        "site-c": "secret-c-in-clear-12345",  # stored before a key was set: sealed
        "site-d": SecretSealer(key + "-lost").seal("secret-d-1234567890", source="site-d"),  # no key opens it
        "site-e": old.seal("secret-e-1234567890", source="site-e"),  # registered anew meanwhile: left alone
    }
    replaced: dict[str, str] = {}

    async def stored_webhook_secrets() -> dict[str, str]:
        return dict(stored)

    async def replace_webhook_secret(source: str, secret: str, replacement: str) -> bool:
        assert stored[source] == secret
        if source == "site-e":
            return False
        replaced[source] = replacement
        return True

    catalog = SimpleNamespace(
        stored_webhook_secrets=SimpleNamespace(remote=stored_webhook_secrets),
        replace_webhook_secret=SimpleNamespace(remote=replace_webhook_secret),
    )
    notifier = WebhookNotifier(
        cast(DeploymentHandle, catalog), results_base_url="http://x", max_attempts=3, secret_sealer=rotated
    )
    assert asyncio.run(notifier.reseal_secrets()) == 2
    assert sorted(replaced) == ["site-a", "site-c"]
    only_new = SecretSealer(f"{key}-new")
    assert only_new.open(replaced["site-a"], source="site-a") == "secret-a-1234567890"
    assert only_new.open(replaced["site-c"], source="site-c") == "secret-c-in-clear-12345"


def test_an_error_httpx_does_not_wrap_is_recorded_as_the_attempt_s() -> None:
    catalog, recorded = _recording_catalog()
    notifier = WebhookNotifier(
        catalog,
        results_base_url="http://x",
        max_attempts=2,
        base_delay_s=0.0,
        allowed_networks=parse_networks("X", "127.0.0.0/8"),
    )

    class Broken(httpx.AsyncClient):
        async def send(self, *args: object, **kwargs: object) -> httpx.Response:  # type: ignore[override]
            raise UnicodeError("a URL httpx cannot encode")

    async def deliver() -> None:
        async with Broken() as client:
            await notifier._deliver(client, _notification())

    asyncio.run(deliver())
    assert [(row["attempt"], row["outcome"]) for row in recorded] == [(1, "retrying"), (2, "gave_up")]
    assert recorded[-1]["error"] == "UnicodeError: a URL httpx cannot encode"


def test_a_receiver_answering_without_end_neither_fills_nor_holds_the_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job manager delivers every source's webhooks: one partner's endless or stalled reply must cost it
    neither memory nor more than an attempt's time."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from qure_ray.pipeline import notifier as notifier_module
    from tests.unit.client_platform import serve

    async def endless(request: object) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4096):  # 256 MB: more than a webhook reply should ever hold
                yield b"x" * 65536

        return StreamingResponse(chunks())

    async def stalled(request: object) -> StreamingResponse:
        await asyncio.sleep(4)
        return StreamingResponse(iter([b"late"]))

    monkeypatch.setattr(notifier_module, "ATTEMPT_TIMEOUT_S", 1.0)
    app = Starlette(routes=[Route("/endless", endless, methods=["POST"]), Route("/stalled", stalled, methods=["POST"])])
    notifier = WebhookNotifier(
        cast(DeploymentHandle, None), results_base_url="http://x", max_attempts=1,
        allowed_networks=parse_networks("X", "127.0.0.0/8"),
    )  # fmt: skip

    async def post(url: str) -> tuple[int | None, str]:
        notification = dataclasses.replace(_notification(), webhook=Webhook(source="site-a", url=url, secret="s" * 32))
        async with notifier.http_client() as client:
            return await notifier._post(client, notification, b"{}", notification.webhook.secret)

    with serve(app) as base_url:
        assert asyncio.run(post(f"{base_url}/endless")) == (200, "")
        started = time.monotonic()
        assert asyncio.run(post(f"{base_url}/stalled")) == (None, "no answer within 1 s")
        assert time.monotonic() - started < 3


def test_a_delivery_connects_to_the_very_addresses_the_egress_check_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that resolves to a public address for the check and to an inside one for the
    connect. A delivery resolves once, checks what it got, and connects there; TLS and Host keep the name."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from qure_ray.pipeline import notifier as notifier_module
    from tests.unit.client_platform import serve

    hosts_seen: list[str] = []
    resolved: list[str] = []
    answers: list[str] = []  # what the name resolves to next; 127.0.0.1 once they run out
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: str | bytes, port: int, *args: Any, **kwargs: Any) -> Any:
        """The resolver under both asyncio's and anyio's lookups: a second lookup would get the next answer."""
        if host not in ("partner.example", b"partner.example"):  # anyio asks with the IDNA-encoded bytes
            return real_getaddrinfo(host, port, *args, **kwargs)
        resolved.append("partner.example")  # the system resolver has never heard of this name
        address = answers.pop(0) if answers else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    async def hook(request: Request) -> Response:
        hosts_seen.append(request.headers["host"])
        return Response(status_code=204)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base_url:
        port = base_url.rsplit(":", 1)[1]
        notification = dataclasses.replace(
            _notification(),
            webhook=Webhook(source="site-a", url=f"http://partner.example:{port}/hook", secret="s" * 32),
        )

        def post(allowed: str) -> tuple[int | None, str]:
            notifier = WebhookNotifier(cast(DeploymentHandle, None), results_base_url="http://x", max_attempts=1,
                                       allowed_networks=parse_networks("X", allowed))  # fmt: skip

            async def attempt() -> tuple[int | None, str]:
                async with notifier.http_client() as client:
                    return await notifier._post(client, notification, b"{}", notification.webhook.secret)

            return asyncio.run(attempt())

        status, error = post("")
        assert status is None and error.startswith("refused: host 'partner.example' resolves to a loopback")
        assert hosts_seen == [] and resolved == ["partner.example"]
        assert post("127.0.0.0/8") == (204, "")
        assert hosts_seen == [f"partner.example:{port}"] and resolved == ["partner.example"] * 2
        # rebinding: public for the check, loopback for a second question, which is never asked
        monkeypatch.setattr(notifier_module, "TIMEOUT_S", 0.5)
        answers.append("192.0.0.9")  # public (RFC 7723); nothing on this machine answers there
        status, error = post("")
        assert status is None and not error.startswith("refused") and hosts_seen == [f"partner.example:{port}"]
        assert resolved == ["partner.example"] * 3


def test_a_delivery_takes_no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would resolve the partner's host itself, past the egress check: deliveries connect directly. (A
    plain httpx client takes the proxy from the environment; `checked_client`'s own transport never does.)"""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.unit.client_platform import serve

    async def hook(request: Request) -> Response:
        return Response(status_code=204)

    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    notifier = WebhookNotifier(cast(DeploymentHandle, None), results_base_url="http://x", max_attempts=1,
                               allowed_networks=parse_networks("X", "127.0.0.0/8"))  # fmt: skip
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base_url:
        notification = dataclasses.replace(
            _notification(), webhook=Webhook(source="site-a", url=f"{base_url}/hook", secret="s" * 32)
        )

        async def attempt() -> tuple[int | None, str]:
            async with notifier.http_client() as client:
                return await notifier._post(client, notification, b"{}", notification.webhook.secret)

        assert asyncio.run(attempt()) == (204, "")


def test_a_delivery_reads_the_url_as_httpx_does() -> None:
    """Credentials in the URL become Basic auth, and Host keeps the port: the URL is httpx's to read."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.unit.client_platform import serve

    seen: list[tuple[str, str, str]] = []

    async def hook(request: Request) -> Response:
        seen.append((request.headers["host"], request.headers.get("authorization", ""), request.url.path))
        return Response(status_code=204)

    notifier = WebhookNotifier(cast(DeploymentHandle, None), results_base_url="http://x", max_attempts=1,
                               allowed_networks=parse_networks("X", "127.0.0.0/8"))  # fmt: skip
    with serve(Starlette(routes=[Route("/hooks/{name}", hook, methods=["POST"])])) as base_url:
        host = base_url.removeprefix("http://")
        url = f"http://partner:s%40cret@{host}/hooks/a%20b"
        notification = dataclasses.replace(_notification(), webhook=Webhook(source="site-a", url=url, secret="s" * 32))

        async def attempt() -> tuple[int | None, str]:
            async with notifier.http_client() as client:
                return await notifier._post(client, notification, b"{}", notification.webhook.secret)

        assert asyncio.run(attempt()) == (204, "")
    assert seen == [(host, "Basic cGFydG5lcjpzQGNyZXQ=", "/hooks/a b")]


def test_an_attempt_that_cannot_be_recorded_is_recorded_later_not_posted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the catalog cannot take the row, the partner must not get the same attempt POSTed again."""
    rows: list[dict[str, object]] = []
    failures = iter([RuntimeError("catalog down"), RuntimeError("still down")])

    async def write(batch: Batch) -> None:
        if (failure := next(failures, None)) is not None:
            raise failure
        rows.extend(batch.rows["webhook_deliveries"])

    catalog = cast(DeploymentHandle, SimpleNamespace(write=SimpleNamespace(remote=write)))
    notifier = WebhookNotifier(catalog, results_base_url="http://x", max_attempts=1, base_delay_s=0.0)
    posts: list[str] = []

    async def post(*args: Any) -> tuple[int | None, str]:
        posts.append("POST")
        return 200, ""

    monkeypatch.setattr(notifier, "_post", post)
    _deliver(notifier, _notification())
    assert posts == ["POST"] and [row["outcome"] for row in rows] == ["delivered"]


def test_deliveries_in_flight_leave_room_for_other_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """A partner whose endpoint keeps failing (its deliveries waiting out their pauses) holds up no other."""
    stuck, other = _notification(), dataclasses.replace(_notification(), result_row_id="r2", source="site-b")
    asked: list[frozenset[str]] = []

    async def undelivered(limit: int, exclude: frozenset[str] = frozenset()) -> list[Notification]:
        asked.append(exclude)
        return [n for n in (stuck, other) if n.result_row_id not in exclude][:limit]

    catalog = cast(DeploymentHandle, SimpleNamespace(undelivered=SimpleNamespace(remote=undelivered)))
    notifier = WebhookNotifier(catalog, results_base_url="http://x", max_attempts=3)
    delivered: list[str] = []
    release = asyncio.Event()

    async def deliver(client: Any, notification: Notification) -> None:
        if notification is stuck:
            await release.wait()  # in its retry pause
        delivered.append(notification.source)

    async def run() -> None:
        monkeypatch.setattr(notifier, "_deliver", deliver)
        monkeypatch.setattr(notifier, "reseal_secrets", lambda: asyncio.sleep(0, 0))
        loop = asyncio.create_task(notifier.run())
        for _ in range(100):
            await asyncio.sleep(0.02)
            if delivered:
                break
        release.set()
        await asyncio.sleep(0.05)
        loop.cancel()

    monkeypatch.setattr("qure_ray.pipeline.notifier.POLL_S", 0.01)
    monkeypatch.setattr("qure_ray.pipeline.notifier.BATCH", 1)  # one at a time: the stuck one first
    asyncio.run(run())
    assert delivered[0] == "site-b" and frozenset({"r1"}) in asked


@pytest.mark.timeout(30)
def test_a_wake_starts_a_round_at_once_not_at_the_next_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job manager wakes the notifier as it records a result: a partner's webhook need not wait a poll."""
    from qure_ray.pipeline import notifier as notifier_module

    monkeypatch.setattr(notifier_module, "POLL_S", 3600.0)  # without a wake, no round within the test
    asked: list[frozenset[str]] = []

    async def stored_webhook_secrets() -> dict[str, str]:
        return {}

    async def undelivered(limit: int, exclude: frozenset[str]) -> list[Notification]:
        asked.append(exclude)
        if len(asked) == 2:  # a result recorded while this round asks: it must not wait for the poll
            notifier.wake()
        return []

    catalog = SimpleNamespace(
        stored_webhook_secrets=SimpleNamespace(remote=stored_webhook_secrets),
        undelivered=SimpleNamespace(remote=undelivered),
    )
    notifier = WebhookNotifier(cast(DeploymentHandle, catalog), results_base_url="http://x", max_attempts=1)

    async def scenario() -> None:
        rounds = asyncio.get_running_loop().create_task(notifier.run())
        for expected in (1, 3):  # the second wake's round wakes it once more, from inside the round
            notifier.wake()
            while len(asked) < expected:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        notifier.wake()  # a shutdown's cancel that meets a wake still stops the rounds
        rounds.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rounds
        assert rounds.cancelled()

    asyncio.run(scenario())
    assert len(asked) == 3  # one round per wake, none from the poll


def test_a_delivered_attempt_reports_how_late_the_partner_learned_of_the_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    from qure_ray.pipeline import notifier as notifier_module

    observed: dict[str, list[float]] = {}

    class Histogram:
        def __init__(self, name: str) -> None:
            self.name = name

        def observe(self, value: float) -> None:
            observed.setdefault(self.name, []).append(value)

    monkeypatch.setattr(notifier_module.metrics, "histogram", Histogram)
    catalog, recorded = _recording_catalog()
    notifier = WebhookNotifier(catalog, results_base_url="http://x", max_attempts=2, base_delay_s=0.0)
    answers = [503, 204]

    async def post(client: object, notification: Notification, body: bytes, secret: str) -> tuple[int, str]:
        return answers.pop(0), ""

    notifier._post = post  # type: ignore[method-assign]
    recorded_at = datetime.now(UTC) - timedelta(seconds=90)  # a result recorded a minute and a half ago
    _deliver(notifier, dataclasses.replace(_notification(), finished_at=recorded_at))
    assert [row["outcome"] for row in recorded] == ["retrying", "delivered"]
    (delay_s,) = observed["qure_webhook_delay_seconds"]  # once: the delivered attempt, not the failed one
    assert 90 <= delay_s < 3600


@pytest.mark.timeout(30)
def test_announcements_answer_a_new_count_at_once_and_otherwise_wait_for_the_next() -> None:
    async def scenario() -> None:
        announcements = Announcements()
        assert await announcements.after(-1, 5.0) == 0  # a count the caller has not seen: at once
        assert await announcements.after(0, 0.05) == 0  # none since: after the timeout
        waiting = asyncio.get_running_loop().create_task(announcements.after(0, 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        announcements.note()
        assert await asyncio.wait_for(waiting, 1.0) == 1

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_a_result_the_catalog_announces_wakes_a_round_whoever_recorded_it() -> None:
    """Results settled at ingest (what no use case reads) waited for the next poll, up to a second: the catalog
    now announces every final result for a source with a webhook, and the notifier's long poll wakes a round."""
    answers = [0, 0, 1, 3]  # the count: first, after a quiet poll, after one result, after two more
    asked: list[int] = []

    async def announced_after(seen: int) -> int:
        asked.append(seen)
        if not answers:
            await asyncio.sleep(3600)
        return answers.pop(0)

    catalog = SimpleNamespace(announced_after=SimpleNamespace(remote=announced_after))
    notifier = WebhookNotifier(cast(DeploymentHandle, catalog), results_base_url="http://x", max_attempts=1)
    woken: list[int] = []
    notifier.wake = lambda: woken.append(len(asked))  # type: ignore[method-assign]

    async def scenario() -> None:
        listening = asyncio.get_running_loop().create_task(notifier.listen())
        while answers:
            await asyncio.sleep(0.01)
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening

    asyncio.run(scenario())
    assert asked == [-1, 0, 0, 1, 3]  # each call carries the count last seen
    assert woken == [3, 4]  # a wake for each change, none for the first answer or a quiet poll


def test_the_catalog_announces_a_write_with_a_result_only_for_a_source_with_a_webhook(tmp_path: Any) -> None:
    from qure_ray.pipeline.catalog_actor import CatalogActor
    from qure_ray.records import InstanceState, ResultRecord, UseCase
    from qure_ray.storage import Catalog, GroupCommitter, LocalObjectStore
    from qure_ray.storage.catalog import settled_rows, webhook_row

    class Actor(CatalogActor.func_or_class):  # type: ignore[misc, name-defined]
        def __del__(self) -> None:  # Serve's graceful-shutdown hook, never awaited here
            pass

    actor = object.__new__(Actor)
    actor.catalog = Catalog(LocalObjectStore(tmp_path))
    actor.committer = GroupCommitter(actor.catalog, interval_s=0.0)
    actor.announcements = Announcements()

    def result(source: str, uid: str) -> Batch:
        return settled_rows(ResultRecord(source=source, sop_uid=uid, usecase=UseCase.UNSUPPORTED,
                                         state=InstanceState.UNSUPPORTED, reason="a knee"))  # fmt: skip

    async def scenario() -> list[int]:
        counts = []
        for batch in (result("site-a", "1.1"), webhook_row("site-a", "https://hook.example/q", "s" * 32, active=True),
                      result("site-b", "1.2"), result("site-a", "1.3")):  # fmt: skip
            assert await actor.write(batch)
            counts.append(actor.announcements.count)
        return counts

    assert asyncio.run(scenario()) == [0, 0, 0, 1]  # before the webhook, another source's, then site-a's
