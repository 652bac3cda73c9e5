"""The `/assets` and `/ready` routes through the real Starlette app (no Ray: the store and a stand-in)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import httpx

from qure_ray.api.app import create_app
from qure_ray.api.asset_urls import AssetSigner
from qure_ray.config import Settings
from qure_ray.storage import LocalObjectStore


@dataclass
class StoreOnlyPlatform:
    """The parts of a platform `/assets` uses; the other routes are not called here."""

    settings: Settings
    store: LocalObjectStore


def test_signed_local_asset_url_serves_the_file_and_refuses_tampering(tmp_path: Path) -> None:
    settings = Settings.load({"QURE_TOKENS": "token-aaaa:site-a,token-bbbb:site-b", "QURE_DATA_URI": str(tmp_path)}, {})
    store = LocalObjectStore(tmp_path)
    key = "assets/site-a/1.2.3/report.pdf"
    store.put(key, b"%PDF-1.4 test")
    app = create_app(StoreOnlyPlatform(settings, store))  # type: ignore[arg-type]
    url = AssetSigner(settings.url_signing_key, 60).sign("http://testserver", key)

    async def get(target: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            return await client.get(target, headers=headers)

    class Client:
        def get(self, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
            return asyncio.run(get(target, headers))

    client = Client()
    ok = client.get(url)
    assert ok.status_code == 200 and ok.content == b"%PDF-1.4 test" and ok.headers["content-type"] == "application/pdf"
    assert client.get(url.replace("report.pdf", "sc.dcm")).status_code == 403
    assert client.get(url.split("?")[0]).status_code == 403
    other = client.get(url, headers={"Authorization": "Token token-bbbb", "Source": "site-b"})
    assert other.status_code == 404
    owner = client.get(url, headers={"Authorization": "Token token-aaaa", "Source": "site-a"})
    assert owner.status_code == 200


def test_openapi_describes_every_route_of_the_app() -> None:
    from starlette.routing import Route

    from qure_ray.api.openapi import spec

    app = create_app(StoreOnlyPlatform(Settings.load({}, {}), None))  # type: ignore[arg-type]
    routes = {route.path.replace("{key:path}", "{key}") for route in app.routes if isinstance(route, Route)}
    document = spec()
    assert routes == set(document["paths"])
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert operation["responses"], path
    results = document["paths"]["/results/{uid}"]["get"]["responses"]
    assert {"200", "202", "206", "400", "401", "403", "404"} <= set(results)


def test_a_signed_url_names_only_outputs_and_originals(tmp_path: Path) -> None:
    """A signature is no way to the catalog, the writer lease or the local secrets beside them."""
    settings = Settings.load({"QURE_TOKENS": "token-aaaa:site-a", "QURE_DATA_URI": str(tmp_path)}, {})
    store = LocalObjectStore(tmp_path)
    app = create_app(StoreOnlyPlatform(settings, store))  # type: ignore[arg-type]
    signer = AssetSigner(settings.url_signing_key, 60)

    async def get(key: str) -> int:
        store.put(key, b"x")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            return (await client.get(signer.sign("http://testserver", key))).status_code

    assert asyncio.run(get("assets/site-a/1.2.3/sc.png")) == 200
    assert asyncio.run(get("dicom/site-a/1.2/1.2.3/1.2.3.4.dcm")) == 200
    for key in ("secrets-key", "catalog/events/0001-a.parquet", "catalog/writer-lease.json"):
        assert asyncio.run(get(key)) == 404, key


def test_ready_is_worked_out_once_for_the_probes_that_arrive_together(tmp_path: Path) -> None:
    """`/ready` needs no token and asks every deployment: a flood of probes must stay one question a second."""

    @dataclass
    class CountingPlatform(StoreOnlyPlatform):
        asked: int = 0
        healthy: bool = True

        async def ready(self) -> bool:
            self.asked += 1
            await asyncio.sleep(0.05)
            if not self.healthy:
                raise RuntimeError("the catalog is not up yet")
            return True

    platform = CountingPlatform(Settings.load({}, {}), LocalObjectStore(tmp_path), healthy=False)
    app = create_app(platform)  # type: ignore[arg-type]

    async def probe(count: int) -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            return [r.status_code for r in await asyncio.gather(*(client.get("/ready") for _ in range(count)))]

    assert asyncio.run(probe(50)) == [503] * 50 and platform.asked == 1
    platform.healthy = True
    app.state.readiness._answer = (0.0, False)  # a second later
    assert asyncio.run(probe(20)) == [200] * 20 and platform.asked == 2
