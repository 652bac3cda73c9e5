"""Uploads: `POST /studies` (Qure form-data, or DICOMweb STOW-RS), `POST /studies/{study}`, `POST /upload`.

Request bodies are parsed part by part as they stream in (`qure_ray.dicom.multipart`); each part is
ingested as soon as it is complete, up to `PARTS_IN_FLIGHT` at once, so memory holds at most that many parts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qure_ray.api.asset_urls import public_base_url
from qure_ray.api.auth import authenticate
from qure_ray.api.bodies import body_of_at_most
from qure_ray.api.errors import require_acceptable
from qure_ray.api.ingest import AfterParse, IngestOutcome, count_outcome, ingest, qure_reply, refused
from qure_ray.api.platform import Platform
from qure_ray.dicom.archive import zip_members
from qure_ray.dicom.multipart import (
    SPOOL_BYTES,
    MediaType,
    MultipartLimits,
    MultipartStream,
    Part,
)
from qure_ray.dicom.stow import FailedInstance, StoredInstance, store_instances_response
from qure_ray.dicom.uids import require_uid
from qure_ray.dicom.validation import Rules
from qure_ray.errors import BadRequestError, Violation
from qure_ray.media_types import DICOM_JSON_MEDIA_TYPE, DICOM_MEDIA_TYPE

ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
REST_OF_REQUEST = "(rest of the request)"
"""The field a Qure-style reply names when a request failed after some of its files were stored."""

logger = logging.getLogger(__name__)


def _limits(platform: Platform) -> MultipartLimits:
    settings = platform.settings
    return MultipartLimits(
        max_part_bytes=settings.max_instance_bytes,
        max_request_bytes=settings.max_request_bytes,
        max_parts=settings.max_parts,
    )


def _check_declared_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequestError(
            f"the request declares {declared} bytes (Content-Length); the limit is {limit} bytes", http_status=413
        )


async def _parts(request: Request, media_type: MediaType, limits: MultipartLimits) -> AsyncIterator[Part]:
    _check_declared_size(request, limits.max_request_bytes)
    stream = MultipartStream(media_type, limits)
    async for chunk in request.stream():
        for part in stream.feed(chunk):
            yield part
    for part in stream.close():
        yield part


PARTS_IN_FLIGHT = 4
"""Parts of one request ingested at once while the rest streams in: a PACS pushes a series in one STOW-RS request,
and one part at a time left each waiting on the store and the catalog's commit (16 slices of 0.5 MB: 1.2 s)."""
LARGE_PART_BYTES = 64 * 1024 * 1024
"""A part this large is ingested alone: memory holds at most `PARTS_IN_FLIGHT` small parts, or one large one
(and, either way, the part being read)."""
_LINGERING: set[asyncio.Task[IngestOutcome]] = set()
"""Ingests that outlive their request (its client went away): held here until they finish."""

StartIngest = Callable[[AfterParse], Coroutine[Any, Any, IngestOutcome]]


class _Ingests:
    """The ingests of one request's parts, up to `PARTS_IN_FLIGHT` at once; outcomes in the parts' order.

    Parts of one SOPInstanceUID are stored in the request's order, as they were when parts went one at a time
    (the last content wins for a source that may overwrite; else the first): after parsing, a part waits until
    every earlier part is parsed, and for the earlier ones of its UID to finish."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
        self._tasks: list[asyncio.Task[IngestOutcome]] = []
        self._uids: list[asyncio.Future[str | None]] = []

    @property
    def failed(self) -> bool:
        """Whether an ingest has failed (a storage error: the request answers 503, so reading on is pointless)."""
        return any(task.done() and not task.cancelled() and task.exception() for task in self._tasks)

    async def add(self, start: StartIngest, *, size: int = 0, discard: Callable[[], None] = lambda: None) -> None:
        """Start an ingest once slots are free (one, or all for a part of `LARGE_PART_BYTES`); meanwhile the body
        is not read further. `discard` releases the part if the request ends before it starts."""
        weight = PARTS_IN_FLIGHT if size >= LARGE_PART_BYTES else 1
        taken = 0
        try:
            for _ in range(weight):  # only this request's reader takes slots: no deadlock between takers
                await self._slots.acquire()
                taken += 1
        except BaseException:
            for _ in range(taken):
                self._slots.release()
            discard()
            raise
        index = len(self._tasks)
        self._uids.append(asyncio.get_running_loop().create_future())
        task = asyncio.create_task(self._run(start, index, weight))
        self._tasks.append(task)
        _LINGERING.add(task)
        task.add_done_callback(_LINGERING.discard)

    async def _run(self, start: StartIngest, index: int, weight: int) -> IngestOutcome:
        try:
            return await start(lambda uid: self._in_order(index, uid))
        finally:
            if not self._uids[index].done():  # refused before its UID was known, or failed
                self._uids[index].set_result(None)
            for _ in range(weight):
                self._slots.release()

    async def _in_order(self, index: int, uid: str) -> None:
        self._uids[index].set_result(uid)
        for earlier in range(index):
            if await self._uids[earlier] == uid:
                await asyncio.wait([self._tasks[earlier]])  # its outcome, or its failure, is its own

    async def outcomes(self) -> list[IngestOutcome]:
        """Every outcome; a failure (a storage error: 503) is raised once the others are done."""
        return list(await asyncio.gather(*self._tasks))

    async def settle(self) -> None:
        """Wait for every started ingest: each part was received whole. If the request is cancelled meanwhile
        (its client went away), they go on to their end regardless (`_LINGERING`)."""
        if self._tasks:
            await asyncio.shield(asyncio.gather(*self._tasks, return_exceptions=True))


async def _ingest_part(
    platform: Platform,
    source: str,
    part: Part,
    field: str,
    after_parse: AfterParse,
    *,
    expected_study: str | None = None,
) -> IngestOutcome:
    try:
        if part.oversize:
            limit = platform.settings.max_instance_bytes
            outcome = refused(field, Rules.TOO_LARGE.value.violation(f"the part exceeds the limit of {limit} bytes"))
            count_outcome(source, outcome, part.size)
            return outcome
        data = await asyncio.to_thread(part.read) if part.body.on_disk else part.read()
        return await ingest(
            platform, source=source, field=field, data=data, expected_study=expected_study, after_parse=after_parse
        )
    finally:
        part.close()


async def _ingest_member(
    platform: Platform, source: str, field: str, data: bytes, after_parse: AfterParse
) -> IngestOutcome:
    return await ingest(platform, source=source, field=field, data=data, after_parse=after_parse)


def _refused_now(outcome: IngestOutcome) -> StartIngest:
    async def answer(_: AfterParse) -> IngestOutcome:
        return outcome

    return answer


async def _form_data(request: Request, platform: Platform, source: str, media_type: MediaType) -> JSONResponse:
    fields = _FieldNames()
    ingests, cut_short = _Ingests(), None
    try:
        async for part in _parts(request, media_type, _limits(platform)):
            if not part.is_file:
                part.close()  # plain form fields carry no instance
                continue
            field = fields.unique(part.name)
            await ingests.add(
                functools.partial(_ingest_part, platform, source, part, field), size=part.size, discard=part.close
            )
            if ingests.failed:
                break
    except BadRequestError as exc:
        cut_short = exc
    finally:
        await ingests.settle()
    outcomes = await ingests.outcomes()
    if cut_short is not None:
        if not any(outcome.accepted for outcome in outcomes):
            raise cut_short
        outcomes.append(refused(REST_OF_REQUEST, _cut_short(cut_short)))
    if not outcomes:
        raise BadRequestError("the form has no file parts; send each DICOM file as a file part")
    status, body = qure_reply(outcomes)
    return JSONResponse(body, status_code=status)


async def _stow(
    request: Request, platform: Platform, source: str, media_type: MediaType, study: str | None
) -> Response:
    base = public_base_url(request, platform.settings.public_url)
    ingests, cut_short = _Ingests(), None
    try:
        async for part in _parts(request, media_type, _limits(platform)):
            field = f"part{part.index}"
            if part.content_type not in ("", DICOM_MEDIA_TYPE):
                part.close()
                outcome = refused(field, Rules.NOT_DICOM.value.violation(f"a part of type {part.content_type!r}"))
                count_outcome(source, outcome, 0)
                await ingests.add(_refused_now(outcome))
                continue
            start = functools.partial(_ingest_part, platform, source, part, field, expected_study=study)
            await ingests.add(start, size=part.size, discard=part.close)
            if ingests.failed:
                break
    except BadRequestError as exc:
        cut_short = exc
    finally:
        await ingests.settle()
    stored: list[StoredInstance] = []
    failed: list[FailedInstance] = []
    studies: set[str] = set()
    for outcome in await ingests.outcomes():
        if outcome.accepted and outcome.metadata:
            m = outcome.metadata
            url = f"{base}/studies/{m.study_uid}/series/{m.series_uid}/instances/{m.sop_uid}"
            stored.append(StoredInstance(m.sop_class_uid, m.sop_uid, url))
            studies.add(m.study_uid)
        elif outcome.violation:
            failed.append(FailedInstance(outcome.sop_class_uid, outcome.sop_uid, outcome.violation.failure_reason))
    if cut_short is not None:
        if not stored:
            raise cut_short
        logger.info("STOW-RS from source %s cut short after %d stored: %s", source, len(stored), cut_short)
        failed.append(FailedInstance("", "", _cut_short(cut_short).failure_reason))
    if not stored and not failed:
        raise BadRequestError("the multipart/related body has no parts; send one application/dicom part per instance")
    # the study's URL when the request stored into one study (GET /studies/{study} retrieves it)
    study_url = f"{base}/studies/{studies.pop()}" if len(studies) == 1 else None
    status, body = store_instances_response(stored, failed, study_url=study_url)
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON_MEDIA_TYPE)


def _cut_short(exc: BadRequestError) -> Violation:
    """What the reply says of the rest of a request that failed (truncated, over a limit) after some of its
    instances were stored: those stay stored and are processed, so the reply must list them."""
    rule = Rules.TOO_LARGE if exc.http_status == 413 else Rules.UNREADABLE
    return rule.value.violation(f"the rest of the request could not be read: {exc}")


async def post_studies(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    study = request.path_params.get("study")
    if study is not None:
        require_uid(study, "StudyInstanceUID")
    media_type = MediaType.parse(request.headers.get("content-type", ""))
    if media_type.value == "multipart/related":
        answer = f"STOW-RS answers with {DICOM_JSON_MEDIA_TYPE}"
        require_acceptable(request.headers, DICOM_JSON_MEDIA_TYPE, "application/json", answer=answer)
        declared = media_type.params.get("type", DICOM_MEDIA_TYPE).lower()
        if declared != DICOM_MEDIA_TYPE:
            raise BadRequestError(
                f'multipart/related of type {declared!r} is not accepted; STOW-RS here takes type="{DICOM_MEDIA_TYPE}"',
                http_status=415,
            )
        await platform.check_capacity()
        return await _stow(request, platform, source, media_type, study)
    if media_type.value == "multipart/form-data" and study is None:
        await platform.check_capacity()
        return await _form_data(request, platform, source, media_type)
    raise BadRequestError(
        f"Content-Type {media_type.value or '(none)'!r} is not accepted on {request.url.path}; send "
        f'multipart/related; type="{DICOM_MEDIA_TYPE}" (DICOMweb STOW-RS) or multipart/form-data (one file per part)',
        http_status=415,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    _check_declared_size(request, limit)
    body = await body_of_at_most(request, limit)
    if body is None:
        raise BadRequestError(f"the body exceeds the per-instance limit of {limit} bytes", http_status=413)
    return body


async def post_upload(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    media_type = MediaType.parse(request.headers.get("content-type", ""))
    if media_type.value == "multipart/form-data":
        await platform.check_capacity()
        return await _form_data(request, platform, source, media_type)
    if media_type.value == DICOM_MEDIA_TYPE:
        await platform.check_capacity()
        data = await _read_body(request, platform.settings.max_instance_bytes)
        if not data:
            raise BadRequestError("the application/dicom body is empty; send one DICOM Part 10 file")
        status, body = qure_reply([await ingest(platform, source=source, field="file", data=data)])
        return JSONResponse(body, status_code=status)
    if media_type.value in ZIP_TYPES:
        await platform.check_capacity()
        return await _zip(request, platform, source)
    raise BadRequestError(
        f"Content-Type {media_type.value or '(none)'!r} is not accepted on POST /upload; "
        "send application/dicom (one instance), application/zip (of DICOM files) or multipart/form-data",
        http_status=415,
    )


async def _zip(request: Request, platform: Platform, source: str) -> JSONResponse:
    """The body is spooled (to disk past a few MB), then its members are ingested, `PARTS_IN_FLIGHT` at once."""
    limits = _limits(platform)
    _check_declared_size(request, limits.max_request_bytes)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_request_bytes:
                raise BadRequestError(f"the zip exceeds the limit of {limits.max_request_bytes} bytes", http_status=413)
            spool.write(chunk)
        spool.seek(0)
        fields = _FieldNames()
        members = zip_members(spool, limits)
        ingests = _Ingests()
        try:
            while (member := await asyncio.to_thread(next, members, None)) is not None:
                field = fields.unique(member.name)  # a zip may hold two members of one name, in two entries
                if member.data is None:
                    assert member.refusal is not None
                    outcome = refused(field, member.refusal)
                    count_outcome(source, outcome, 0)
                    await ingests.add(_refused_now(outcome))
                else:
                    data = member.data
                    await ingests.add(functools.partial(_ingest_member, platform, source, field, data), size=len(data))
                    if ingests.failed:
                        break
        finally:
            await ingests.settle()
        outcomes = await ingests.outcomes()
    if not outcomes:
        raise BadRequestError("the zip holds no files; put one DICOM file per member")
    status, body = qure_reply(outcomes)
    return JSONResponse(body, status_code=status)


class _FieldNames:
    """Each part's key in the reply's `messages`: its name, and `name[n]` for the n-th repeat of a name."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def unique(self, name: str) -> str:
        count = self._seen.get(name, 0)
        self._seen[name] = count + 1
        return name if count == 0 else f"{name}[{count}]"
