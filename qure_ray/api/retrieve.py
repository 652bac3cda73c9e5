"""WADO-RS retrieve of stored originals (PS3.18 §10.4): an instance, a series or a study as
`multipart/related; type="application/dicom"`; their metadata as `application/dicom+json`; an instance's frames
(`dicom.frames`). They are what the RetrieveURLs of a STOW-RS reply point at; a source sees only its own
instances, and only those the catalog holds. A series or a study is streamed an instance at a time, so its size
never sits in memory; so are frames, a frame at a time.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from qure_ray.api.asset_urls import public_base_url
from qure_ray.api.auth import authenticate
from qure_ray.api.errors import require_acceptable
from qure_ray.api.platform import Platform
from qure_ray.dicom.frames import frame_numbers, frame_rendition, frames_of, metadata_json, parse_stored
from qure_ray.dicom.multipart import DICOM_MULTIPART, closing_delimiter, dicom_multipart, multipart_part
from qure_ray.dicom.uids import require_uid
from qure_ray.errors import NotFoundError, ObjectMissingError
from qure_ray.media_types import DICOM_JSON_MEDIA_TYPE, DICOM_MEDIA_TYPE
from qure_ray.records import InstanceRecord
from qure_ray.storage.keys import dicom_key_parts, dicom_prefix
from qure_ray.storage.object_store import ObjectStore

_UID_LABELS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "sop": "SOPInstanceUID"}


async def get_instance(request: Request) -> Response:
    platform, source = _retrieving(request)
    record = await _instance(request, platform, source)
    data = await asyncio.to_thread(platform.store.get, record.object_key)
    body, media_type = dicom_multipart([data])
    return Response(body, media_type=media_type)


async def get_originals(request: Request) -> Response:
    """A study's or a series' originals, streamed."""
    platform, source = _retrieving(request)
    records = await _records(request, platform, source)
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        _parts(platform.store, records, boundary), media_type=f"{DICOM_MULTIPART}; boundary={boundary}"
    )


async def get_frames(request: Request) -> Response:
    """Some frames of an instance, in the order asked, each as the Accept header admits (`frame_rendition`)."""
    platform, source = _authenticated(request)
    numbers = frame_numbers(request.path_params["frames"])
    record = await _instance(request, platform, source)
    rendition = frame_rendition(request.headers.get("accept", ""), record.transfer_syntax)
    data = await asyncio.to_thread(platform.store.get, record.object_key)
    frames = await asyncio.to_thread(frames_of, data, numbers, rendition)  # a missing frame is a 404 here
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        _frame_parts(frames, rendition.content_type, boundary),
        media_type=f'multipart/related; type="{rendition.media_type}"; boundary={boundary}',
    )


async def get_instance_metadata(request: Request) -> Response:
    platform, source = _describing(request)
    record = await _instance(request, platform, source)
    body = await asyncio.to_thread(_metadata, platform.store, record, _base(request, platform))
    return Response(json.dumps([body]), media_type=DICOM_JSON_MEDIA_TYPE)


async def get_many_metadata(request: Request) -> Response:
    """The metadata of a study's or a series' instances, streamed as one JSON array."""
    platform, source = _describing(request)
    records, base = await _records(request, platform, source), _base(request, platform)
    return StreamingResponse(_metadata_array(platform.store, records, base), media_type=DICOM_JSON_MEDIA_TYPE)


async def _instance(request: Request, platform: Platform, source: str) -> InstanceRecord:
    study, series, sop = (require_uid(request.path_params[name], _UID_LABELS[name]) for name in _UID_LABELS)
    record = await platform.find_instance(source, sop)
    if record is None or record.study_uid != study or record.series_uid != series:
        raise NotFoundError(f"no instance {sop} in series {series} of study {study} for this source")
    return record


async def _records(request: Request, platform: Platform, source: str) -> list[InstanceRecord]:
    """The catalog's instances of the study, or of its series when the path names one; not the store's
    listing: an original the platform never acknowledged (its upload failed after storing it) or one an
    overwrite moved to another series is not served. The listing only names a study's series."""
    study = require_uid(request.path_params["study"], "StudyInstanceUID")
    series = request.path_params.get("series")
    if series is None:
        listed = await asyncio.to_thread(platform.store.list_keys, dicom_prefix(source, study))
        series_uids = sorted({parts[2] for parts in map(dicom_key_parts, listed) if parts is not None})
    else:
        series_uids = [require_uid(series, "SeriesInstanceUID")]
    records = [
        record
        for uid in series_uids
        for record in await platform.instances_of_series(source, uid)
        if record.study_uid == study
    ]
    if not records:
        what = f"series {series} of study {study}" if series else f"study {study}"
        raise NotFoundError(f"no instance of {what} for this source")
    return records


async def _parts(store: ObjectStore, records: list[InstanceRecord], boundary: str) -> AsyncIterator[bytes]:
    for record in records:
        try:
            data = await asyncio.to_thread(store.get, record.object_key)
        except ObjectMissingError:  # overwritten under another key meanwhile: the answer has begun, go on
            continue
        yield multipart_part(data, DICOM_MEDIA_TYPE, boundary)
    yield closing_delimiter(boundary)


async def _metadata_array(store: ObjectStore, records: list[InstanceRecord], base: str) -> AsyncIterator[bytes]:
    """A JSON array, an instance at a time."""
    separator = b"["
    for record in records:
        try:
            body = await asyncio.to_thread(_metadata, store, record, base)
        except ObjectMissingError:  # overwritten under another key meanwhile: the answer has begun, go on
            continue
        yield separator + json.dumps(body).encode()
        separator = b","
    yield b"[]" if separator == b"[" else b"]"


def _metadata(store: ObjectStore, record: InstanceRecord, base: str) -> dict[str, object]:
    frames_url = f"{base}/studies/{record.study_uid}/series/{record.series_uid}/instances/{record.sop_uid}/frames"
    return metadata_json(parse_stored(store.get(record.object_key), pixels=False), frames_url)


async def _frame_parts(frames: Iterator[bytes], content_type: str, boundary: str) -> AsyncIterator[bytes]:
    while (frame := await asyncio.to_thread(next, frames, None)) is not None:
        yield multipart_part(frame, content_type, boundary)
    yield closing_delimiter(boundary)


def _base(request: Request, platform: Platform) -> str:
    return public_base_url(request, platform.settings.public_url)


def _authenticated(request: Request) -> tuple[Platform, str]:
    platform: Platform = request.app.state.platform
    return platform, authenticate(request.headers, platform.settings.tokens)


def _retrieving(request: Request) -> tuple[Platform, str]:
    """The platform and the authenticated source of a retrieve of originals this server can answer as asked."""
    platform, source = _authenticated(request)
    answer = f"this server answers a retrieve with {DICOM_MULTIPART}"
    require_acceptable(request.headers, DICOM_MULTIPART, answer=answer)
    return platform, source


def _describing(request: Request) -> tuple[Platform, str]:
    """The same for a retrieve of metadata."""
    platform, source = _authenticated(request)
    answer = f"this server answers a metadata retrieve with {DICOM_JSON_MEDIA_TYPE}"
    require_acceptable(request.headers, DICOM_JSON_MEDIA_TYPE, "application/json", answer=answer)
    return platform, source
