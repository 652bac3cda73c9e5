"""The Starlette application: routes, error handlers, and the platform it talks to."""

from __future__ import annotations

import asyncio
import logging
import math
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from qure_ray.api.asset_urls import get_asset
from qure_ray.api.compute import get_compute
from qure_ray.api.errors import EXCEPTION_HANDLERS, error_response
from qure_ray.api.openapi import openapi_json
from qure_ray.api.platform import Platform
from qure_ray.api.results import get_result
from qure_ray.api.retrieve import (
    get_bulkdata,
    get_frames,
    get_instance,
    get_instance_metadata,
    get_many_metadata,
    get_originals,
    get_rendered,
)
from qure_ray.api.uploads import post_studies, post_upload
from qure_ray.api.webhooks import delete_webhook, get_webhook, put_webhook

logger = logging.getLogger(__name__)
READY_TIMEOUT_S = 5.0
READY_CACHE_S = 1.0


async def health(request: Request) -> JSONResponse:
    """Liveness: 200 whenever this ingress replica answers at all (restart it when it does not)."""
    return JSONResponse({"status": "alive"})


class Readiness:
    """`/ready`'s answer, worked out at most once per `READY_CACHE_S` and shared by the requests that arrive
    meanwhile. `/ready` needs no token, and each answer calls the store and every deployment: a flood of probes
    must not become a flood of calls competing with uploads."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._answer: tuple[float, bool] = (-math.inf, False)
        self._probe: asyncio.Task[bool] | None = None

    async def __call__(self) -> bool:
        answered_at, ok = self._answer
        if time.monotonic() - answered_at < READY_CACHE_S:
            return ok
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._ask())
        return await asyncio.shield(self._probe)

    async def _ask(self) -> bool:
        try:
            await asyncio.wait_for(self.platform.ready(), READY_TIMEOUT_S)
            ok = True
        except Exception as exc:
            logger.warning("not ready: %s", exc)
            ok = False
        self._answer = (time.monotonic(), ok)
        return ok


async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 once catalog, object store, queue, job manager and every model replica answer;
    503 otherwise (send no traffic yet). Reveals nothing else."""
    if not await request.app.state.readiness():
        return error_response(503, "not ready yet", headers={"Retry-After": "5"})
    return JSONResponse({"status": "ok"})


def create_app(platform: Platform) -> Starlette:
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/studies", post_studies, methods=["POST"]),
            Route("/studies/{study}", post_studies, methods=["POST"]),
            Route("/studies/{study}", get_originals, methods=["GET"]),
            Route("/studies/{study}/metadata", get_many_metadata, methods=["GET"]),
            Route("/studies/{study}/series/{series}", get_originals, methods=["GET"]),
            Route("/studies/{study}/series/{series}/metadata", get_many_metadata, methods=["GET"]),
            Route("/studies/{study}/series/{series}/instances/{sop}", get_instance, methods=["GET"]),
            Route("/studies/{study}/series/{series}/instances/{sop}/metadata", get_instance_metadata, methods=["GET"]),
            Route("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", get_frames, methods=["GET"]),
            Route("/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}", get_bulkdata, methods=["GET"]),
            Route("/studies/{study}/series/{series}/instances/{sop}/rendered", get_rendered, methods=["GET"]),
            Route(
                "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
                get_rendered,
                methods=["GET"],
            ),
            Route("/upload", post_upload, methods=["POST"]),
            Route("/results/v2/{uid}", get_result, methods=["GET"]),
            Route("/results/{uid}", get_result, methods=["GET"]),
            Route("/compute/{series}", get_compute, methods=["GET"]),
            Route("/webhooks", put_webhook, methods=["PUT"]),
            Route("/webhooks", get_webhook, methods=["GET"]),
            Route("/webhooks", delete_webhook, methods=["DELETE"]),
            Route("/assets/{key:path}", get_asset, methods=["GET"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.platform = platform
    app.state.readiness = Readiness(platform)
    return app
