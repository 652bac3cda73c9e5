"""WADO-RS retrieve of stored originals (PS3.18 §10.4): an instance, a series or a study as
`multipart/related; type="application/dicom"`; their metadata as `application/dicom+json`; an instance's frames
and bulk data (`dicom.frames`). They are what the RetrieveURLs of a STOW-RS reply point at; a source sees only
its own instances, and only those the catalog holds. A series or a study is streamed an instance at a time, so
its size never sits in memory. Frames are sent a frame at a time, from the one stored object read whole.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from qure_ray.api.asset_urls import public_base_url
from qure_ray.api.auth import authenticate
from qure_ray.api.errors import require_acceptable
from qure_ray.api.platform import Platform
from qure_ray.dicom.frames import OCTET_STREAM, PIXEL_DATA, StoredObject, frame_numbers, frame_rendition
from qure_ray.dicom.multipart import DICOM_MULTIPART, closing_delimiter, dicom_multipart, multipart_part
from qure_ray.dicom.rendered import Rendering
from qure_ray.dicom.uids import require_uid
from qure_ray.errors import BadRequestError, NotFoundError, ObjectMissingError
from qure_ray.media_types import DICOM_JSON_MEDIA_TYPE, DICOM_MEDIA_TYPE
from qure_ray.records import InstanceRecord
from qure_ray.storage.keys import dicom_key_parts, dicom_prefix
from qure_ray.storage.object_store import ObjectStore

BULK_MULTIPART = f'multipart/related; type="{OCTET_STREAM}"'
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
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
    return await _frames(request, platform, source, numbers)


async def get_bulkdata(request: Request) -> Response:
    """A BulkDataURI of the metadata: Pixel Data as all the instance's frames, another value as one
    `application/octet-stream` part, as stored."""
    platform, source = _authenticated(request)
    tag = request.path_params["tag"]
    if not _TAG.fullmatch(tag):
        raise BadRequestError(f"a bulk data tag is 8 hexadecimal digits, like 7FE00010; got {tag[:20]!r}")
    if int(tag, 16) == PIXEL_DATA:
        return await _frames(request, platform, source, None)
    require_acceptable(request.headers, BULK_MULTIPART, answer=f"bulk data is sent as {BULK_MULTIPART}")
    record = await _instance(request, platform, source)
    stored = await asyncio.to_thread(_read, platform.store, record)
    value = await asyncio.to_thread(stored.value_bytes, int(tag, 16)) if int(tag, 16) in stored.bulk_tags() else None
    if value is None:
        raise NotFoundError(f"the instance has no bulk data element {tag}")
    boundary = uuid.uuid4().hex
    body = multipart_part(value, OCTET_STREAM, boundary) + closing_delimiter(boundary)
    return Response(body, media_type=f"{BULK_MULTIPART}; boundary={boundary}")


async def get_rendered(request: Request) -> Response:
    """An instance's frame as JPEG or PNG (`dicom.rendered`): its first frame, or the one the path names."""
    platform, source = _authenticated(request)
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = frozenset(name for name in names if names.count(name) > 1)
    rendering = Rendering.asked(request.headers.get("accept", ""), request.query_params, repeated)
    number = 1
    if "frames" in request.path_params:
        numbers = frame_numbers(request.path_params["frames"])
        if len(numbers) != 1:
            raise BadRequestError("a rendered frame is one frame; ask for each frame on its own")
        number = numbers[0]
    record = await _instance(request, platform, source)
    stored = await asyncio.to_thread(_read, platform.store, record)
    picture = await asyncio.to_thread(rendering.render, stored, number)
    return Response(picture, media_type=rendering.media_type)


async def _frames(request: Request, platform: Platform, source: str, numbers: list[int] | None) -> Response:
    """Frames `numbers` (None: all) of the instance the path names; the first is made before the answer begins."""
    record = await _instance(request, platform, source)
    rendition = frame_rendition(request.headers.get("accept", ""), record.transfer_syntax)
    stored = await asyncio.to_thread(_read, platform.store, record)
    wanted = numbers or list(range(1, stored.frames + 1))
    frames = await asyncio.to_thread(stored.pixel_frames, wanted, rendition)
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        _frame_parts(frames, rendition.content_type, boundary),
        media_type=f'multipart/related; type="{rendition.media_type}"; boundary={boundary}',
    )


async def get_instance_metadata(request: Request) -> Response:
    platform, source = _describing(request)
    record = await _instance(request, platform, source)
    body = await asyncio.to_thread(_metadata, platform.store, record, _base(request, platform))
    return Response(b"[" + body + b"]", media_type=DICOM_JSON_MEDIA_TYPE)


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
        yield separator + body
        separator = b","
    yield b"[]" if separator == b"[" else b"]"


def _read(store: ObjectStore, record: InstanceRecord) -> StoredObject:
    return StoredObject.read(store.get(record.object_key))


def _metadata(store: ObjectStore, record: InstanceRecord, base: str) -> bytes:
    """One instance's metadata as JSON (encoded here, in a worker thread: a large data set takes a while)."""
    instance = f"{base}/studies/{record.study_uid}/series/{record.series_uid}/instances/{record.sop_uid}"
    return json.dumps(_read(store, record).metadata(f"{instance}/bulkdata")).encode()


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
