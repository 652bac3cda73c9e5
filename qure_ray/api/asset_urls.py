"""Asset URLs: pre-signed S3 URLs, or on local storage HMAC-signed, expiring `/assets/...` URLs.

A local URL is `/assets/<source>/<uid>/<name>?expires=<epoch s>&signature=<hex>`, the signature an
HMAC-SHA256 over the path and the expiry; altering either, or using it after expiry, gives 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from qure_ray.api.auth import authenticate
from qure_ray.errors import ForbiddenError, NotFoundError, StorageError
from qure_ray.media_types import MEDIA_TYPES
from qure_ray.storage.object_store import ObjectStore

if TYPE_CHECKING:
    from qure_ray.api.platform import Platform

ASSETS_ROUTE = "/assets/"
SERVED_PREFIXES = ("assets/", "dicom/")
"""What a signed URL may name: outputs and originals."""
_EXPIRES = re.compile(r"[0-9]{1,12}")


def public_base_url(request: Request, public_url: str) -> str:
    """Where clients reach this platform, for the URLs it hands out (asset links, STOW-RS RetrieveURLs):
    `QURE_PUBLIC_URL` when set, else the request's own. Behind a TLS load balancer the request says http, and
    some clients (dicomweb-client) send a Host header without the port."""
    return public_url.rstrip("/") or str(request.base_url).rstrip("/")


@dataclass(frozen=True)
class AssetSigner:
    secret: bytes = field(repr=False)
    expiry_s: int

    def _signature(self, key: str, expires: int) -> str:
        return hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, base_url: str, key: str, *, now_s: float | None = None) -> str:
        """`key` is `assets/<source>/<uid>/<name>` (or `dicom/...`); returns an absolute URL."""
        expires = int((time.time() if now_s is None else now_s) + self.expiry_s)
        query = f"expires={expires}&signature={self._signature(key, expires)}"
        return f"{base_url.rstrip('/')}{ASSETS_ROUTE}{quote(key)}?{query}"

    def verify(self, key: str, expires: str, signature: str, *, now_s: float | None = None) -> None:
        # ASCII digits only, and few of them: `isdigit` took "²", and int() refuses over 4300 digits (a 500)
        if not _EXPIRES.fullmatch(expires) or not hmac.compare_digest(self._signature(key, int(expires)), signature):
            raise ForbiddenError("the asset URL's signature does not match; ask GET /results again for fresh URLs")
        if int(expires) < (time.time() if now_s is None else now_s):
            raise ForbiddenError("the asset URL has expired; ask GET /results again for fresh URLs")


def file_urls(
    *, signer: AssetSigner, store: ObjectStore, base_url: str, assets: dict[str, list[str]], original_keys: list[str]
) -> dict[str, list[str]]:
    """The `result.files` object: each asset kind → its URLs, plus the stored original(s)."""
    keys = {kind: keys for kind, keys in sorted(assets.items())} | {"original": original_keys}
    every_key = [key for kind_keys in keys.values() for key in kind_keys]
    urls = store.presigned_urls(every_key, expires_s=signer.expiry_s)
    if urls is None:
        urls = [signer.sign(base_url, key) for key in every_key]
    in_order = iter(urls)
    return {kind: [next(in_order) for _ in kind_keys] for kind, kind_keys in keys.items()}


async def get_asset(request: Request) -> Response:
    """Serve a local asset by its signed URL. With a token, another source's asset answers 404."""
    platform: Platform = request.app.state.platform
    key = request.path_params["key"]
    if not key.startswith(SERVED_PREFIXES):  # the catalog, the writer lease, local secrets: never over HTTP
        raise NotFoundError("no such asset")
    signer = AssetSigner(platform.settings.url_signing_key, platform.settings.asset_url_expiry_s)
    signer.verify(key, request.query_params.get("expires", ""), request.query_params.get("signature", ""))
    owner = key.split("/")[1] if key.count("/") >= 2 else ""
    if "authorization" in request.headers and authenticate(request.headers, platform.settings.tokens) != owner:
        raise NotFoundError("no such asset for this source")
    try:
        data = await asyncio.to_thread(platform.store.get, key)
    except StorageError as exc:
        raise NotFoundError("the asset no longer exists") from exc
    media_type = MEDIA_TYPES.get(PurePosixPath(key).suffix, "application/octet-stream")
    return Response(data, media_type=media_type)
