"""Exceptions → HTTP responses, in one place. Every error body is JSON with a human-readable `message`."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from qure_ray.errors import (
    AuthError,
    BadRequestError,
    ForbiddenError,
    InvalidInstanceError,
    NotFoundError,
    OverloadedError,
    QureError,
    StorageError,
)
from qure_ray.media_types import accepts

logger = logging.getLogger(__name__)


def require_acceptable(headers: Headers, *offered: str, answer: str) -> None:
    """A 406 unless the request's Accept header admits one of the `offered` media types. `answer`: what the
    route answers with, as the start of the message."""
    accept = headers.get("accept", "")
    if not accepts(accept, *offered):
        raise BadRequestError(f"{answer}, which the Accept header ({accept[:200]!r}) does not admit", http_status=406)


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: object
) -> JSONResponse:
    """`{"message", "status", **extra}` with `status`; `headers` go on the response (Retry-After, Allow, ...)."""
    return JSONResponse({"message": message, "status": status, **extra}, status_code=status, headers=headers)


async def handle_qure_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ForbiddenError):
        return error_response(403, str(exc))
    if isinstance(exc, AuthError):
        return error_response(
            401, str(exc), headers_hint="Authorization: Token <token>; Source: <source>",
            headers={"WWW-Authenticate": 'Token realm="qure_ray"'},  # RFC 9110: a 401 names its scheme
        )  # fmt: skip
    if isinstance(exc, InvalidInstanceError):
        return error_response(exc.http_status, str(exc), code=exc.code)
    if isinstance(exc, BadRequestError):
        return error_response(exc.http_status, str(exc))
    if isinstance(exc, OverloadedError):
        return error_response(
            503, str(exc), queue_depth=exc.queue_depth, headers={"Retry-After": str(exc.retry_after_s)}
        )
    if isinstance(exc, NotFoundError):
        return error_response(404, str(exc))
    if isinstance(exc, StorageError):
        logger.error("storage failure on %s: %s", request.url.path, exc)
        return error_response(503, "storage is temporarily unavailable; retry later", headers={"Retry-After": "5"})
    logger.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return error_response(500, "internal error; the request was not completed")


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail or "request failed", headers=exc.headers)  # a 405's Allow


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-body: nothing to answer, and not the server's failure (no traceback). What
    was ingested before that point is stored and processed."""
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    return error_response(400, "the client disconnected before the request body was complete")


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return error_response(500, "internal error; the request was not completed")


EXCEPTION_HANDLERS = {
    QureError: handle_qure_error,
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    Exception: handle_unexpected,
}
