"""Request bodies through the real Starlette app: read only as far as a route's limit, and a client that goes
away mid-body is not the server's failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qure_ray.api.app import create_app
from qure_ray.api.webhooks import MAX_BODY_BYTES
from tests.unit.client_platform import SOURCE, TOKEN, memory_platform

AUTH = {"Authorization": f"Token {TOKEN}", "Source": SOURCE}
CHUNK = 65536


def test_put_webhooks_stops_reading_a_body_past_its_limit(tmp_path: Path) -> None:
    app = create_app(memory_platform(tmp_path))  # type: ignore[arg-type]
    pulled = 0

    async def ten_megabytes() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(160):
            pulled += 1
            yield b" " * CHUNK

    async def put() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            return await client.put("/webhooks", content=ten_megabytes(), headers=AUTH)

    response = asyncio.run(put())
    assert response.status_code == 400 and f"at most {MAX_BODY_BYTES} bytes" in response.json()["message"]
    assert pulled * CHUNK <= MAX_BODY_BYTES + 2 * CHUNK  # not the 10 MB sent


def test_a_client_that_disconnects_mid_body_is_answered_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(memory_platform(tmp_path))  # type: ignore[arg-type]
    messages = [
        {"type": "http.request", "body": b'--b\r\nContent-Disposition: form-data; name="f"', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/upload", "raw_path": b"/upload", "query_string": b"", "root_path": "",
        "server": ("testserver", 80), "client": ("127.0.0.1", 5000),
        "headers": [(name.lower().encode(), value.encode()) for name, value in AUTH.items()]
        + [(b"content-type", b"multipart/form-data; boundary=b"), (b"content-length", b"100000")],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert "disconnected" in b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
