"""`POST /studies` (multipart/form-data, one DICOM file per part) and `POST /upload`."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from qure_ray.api.auth import authenticate
from qure_ray.api.ingest import IngestOutcome, ingest, qure_reply
from qure_ray.api.platform import Platform
from qure_ray.errors import BadRequestError

MAX_PARTS = 1000


def _check_declared_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequestError(
            f"the request declares {declared} bytes (Content-Length); the limit is {limit} bytes", http_status=413
        )


async def _ingest_form(request: Request, platform: Platform, source: str) -> JSONResponse:
    _check_declared_size(request, platform.settings.max_request_bytes)
    try:
        form = await request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
    except Exception as exc:  # python-multipart and Starlette raise several kinds for broken bodies
        raise BadRequestError(f"the multipart/form-data body could not be parsed: {exc}") from exc
    outcomes: list[IngestOutcome] = []
    seen: dict[str, int] = {}
    try:
        for name, value in form.multi_items():
            count = seen.get(name, 0)
            seen[name] = count + 1
            field = name if count == 0 else f"{name}[{count}]"
            if not isinstance(value, UploadFile):
                continue  # plain form fields carry no instance
            data = await value.read()
            outcomes.append(await ingest(platform, source=source, field=field, data=data))
    finally:
        await form.close()
    if not outcomes:
        raise BadRequestError("the form has no file parts; send each DICOM file as a file part")
    status, body = qure_reply(outcomes)
    return JSONResponse(body, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    _check_declared_size(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequestError(f"the body exceeds the per-instance limit of {limit} bytes", http_status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def post_studies(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    media_type = _media_type(request)
    if media_type != "multipart/form-data":
        raise BadRequestError(
            f"Content-Type {media_type or '(none)'!r} is not accepted on POST /studies; "
            "send multipart/form-data with one DICOM file per part",
            http_status=415,
        )
    return await _ingest_form(request, platform, source)


async def post_upload(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        return await _ingest_form(request, platform, source)
    if media_type == "application/dicom":
        data = await _read_body(request, platform.settings.max_instance_bytes)
        if not data:
            raise BadRequestError("the application/dicom body is empty; send one DICOM Part 10 file")
        status, body = qure_reply([await ingest(platform, source=source, field="file", data=data)])
        return JSONResponse(body, status_code=status)
    raise BadRequestError(
        f"Content-Type {media_type or '(none)'!r} is not accepted on POST /upload; "
        "send application/dicom (one instance) or multipart/form-data",
        http_status=415,
    )
