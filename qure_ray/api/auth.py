"""Token and Source checks (DESIGN.md §3): 401 without a known token, 403 when Source is not the token's."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers

from qure_ray.config import TokenTable
from qure_ray.errors import AuthError, ForbiddenError

_SCHEMES = ("token", "bearer")


def authenticate(headers: Headers, tokens: TokenTable) -> str:
    """The caller's source. Raises `AuthError` (401) or `ForbiddenError` (403)."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() not in _SCHEMES or not token.strip():
        raise AuthError("send 'Authorization: Token <token>' (or 'Bearer <token>') with a valid API token")
    token = token.strip()
    source = None
    for known, known_source in tokens.sources_by_token.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            source = known_source
    if source is None:
        raise AuthError("the API token is not valid; check the token you were given")
    claimed = headers.get("source", "").strip()
    if not claimed:
        raise ForbiddenError("send a 'Source: <source>' header naming the source your token belongs to")
    if claimed != source:
        raise ForbiddenError(f"the token does not belong to source {claimed[:64]!r}")
    return source
