"""`PUT|GET|DELETE /webhooks`: a source's callback URL for final results (see `qure_ray.pipeline.notifier`).

`PUT` takes `{"url": "https://...", "secret": "..."}` (secret optional: one is generated) and answers with
the secret once; later `GET`s show only the URL. Only results finished after registration are announced.
"""

from __future__ import annotations

import json
import re
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse

from qure_ray.api.auth import authenticate
from qure_ray.api.bodies import body_of_at_most
from qure_ray.api.platform import Platform
from qure_ray.egress import EgressRefused, check_url
from qure_ray.errors import BadRequestError, NotFoundError

_URL = re.compile(r"^https?://[^/\s?#]+[^\s]*$")
_SECRET = re.compile(r"^[\x21-\x7e]{16,256}$")
MAX_BODY_BYTES = 4096


async def put_webhook(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    body = await body_of_at_most(request, MAX_BODY_BYTES)
    try:
        document = json.loads(body) if body is not None else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..."
        raise BadRequestError(f"the body is not JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from exc
    if not isinstance(document, dict):
        raise BadRequestError(
            f'send a JSON object of at most {MAX_BODY_BYTES} bytes: {{"url": "https://...", "secret": "..."}}'
        )
    url, secret = document.get("url"), document.get("secret") or secrets.token_hex(32)
    if not isinstance(url, str) or len(url) > 2000 or not _URL.match(url):
        raise BadRequestError(f"url must be an http(s) URL of at most 2000 characters; got {str(url)[:100]!r}")
    if not isinstance(secret, str) or not _SECRET.match(secret):
        raise BadRequestError("secret must be 16-256 printable ASCII characters without spaces (or left out)")
    try:
        await check_url(url, platform.settings.webhook_networks)
    except EgressRefused as exc:
        raise BadRequestError(f"url: {exc}") from exc
    await platform.set_webhook(source, url, secret, active=True)
    return JSONResponse(
        {
            "message": "webhook registered: each result finished from now on is POSTed to url, signed in "
            "X-Qure-Signature with this secret (it is not shown again)",
            "url": url,
            "secret": secret,
        }
    )


async def get_webhook(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    webhook = await platform.webhook(source)
    if webhook is None:
        raise NotFoundError("this source has no webhook; PUT /webhooks registers one")
    return JSONResponse({"url": webhook.url})


async def delete_webhook(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    if await platform.webhook(source) is None:
        raise NotFoundError("this source has no webhook")
    await platform.set_webhook(source, "", "", active=False)
    return JSONResponse({"message": "webhook removed"})
