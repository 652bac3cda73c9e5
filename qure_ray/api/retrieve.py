"""WADO-RS retrieve of stored originals: one instance, a series or a study, as `multipart/related;
type="application/dicom"`. They are what the RetrieveURLs of a STOW-RS reply point at; a source sees only its
own instances, and only those the catalog holds. A series or a study is streamed an instance at a time, so its
size never sits in memory.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from qure_ray.api.auth import authenticate
from qure_ray.api.errors import require_acceptable
from qure_ray.api.platform import Platform
from qure_ray.dicom.multipart import DICOM_MULTIPART, closing_delimiter, dicom_multipart, dicom_part
from qure_ray.dicom.uids import require_uid
from qure_ray.errors import NotFoundError, ObjectMissingError
from qure_ray.storage.keys import dicom_key_parts, dicom_prefix
from qure_ray.storage.object_store import ObjectStore


async def get_instance(request: Request) -> Response:
    platform, source = _retrieving(request)
    study, series, sop = (
        require_uid(request.path_params[name], label)
        for name, label in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"), ("sop", "SOPInstanceUID"))
    )
    record = await platform.find_instance(source, sop)
    if record is None or record.study_uid != study or record.series_uid != series:
        raise NotFoundError(f"no instance {sop} in series {series} of study {study} for this source")
    data = await asyncio.to_thread(platform.store.get, record.object_key)
    body, media_type = dicom_multipart([data])
    return Response(body, media_type=media_type)


async def get_study(request: Request) -> Response:
    return await _get_many(request, series=None)


async def get_series(request: Request) -> Response:
    return await _get_many(request, series=require_uid(request.path_params["series"], "SeriesInstanceUID"))


async def _get_many(request: Request, *, series: str | None) -> Response:
    """The catalog's instances of the study or series, not the store's listing: an original the platform never
    acknowledged (its upload failed after storing it) or one an overwrite moved to another series is not
    served. The listing only names a study's series."""
    platform, source = _retrieving(request)
    study = require_uid(request.path_params["study"], "StudyInstanceUID")
    if series is None:
        listed = await asyncio.to_thread(platform.store.list_keys, dicom_prefix(source, study))
        series_uids = sorted({parts[2] for parts in map(dicom_key_parts, listed) if parts is not None})
    else:
        series_uids = [series]
    keys = [
        record.object_key
        for uid in series_uids
        for record in await platform.instances_of_series(source, uid)
        if record.study_uid == study
    ]
    if not keys:
        what = f"series {series} of study {study}" if series else f"study {study}"
        raise NotFoundError(f"no instance of {what} for this source")
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        _parts(platform.store, keys, boundary), media_type=f"{DICOM_MULTIPART}; boundary={boundary}"
    )


async def _parts(store: ObjectStore, keys: list[str], boundary: str) -> AsyncIterator[bytes]:
    for key in keys:
        try:
            data = await asyncio.to_thread(store.get, key)
        except ObjectMissingError:  # overwritten under another key meanwhile: the answer has begun, go on
            continue
        yield dicom_part(data, boundary)
    yield closing_delimiter(boundary)


def _retrieving(request: Request) -> tuple[Platform, str]:
    """The platform and the authenticated source of a retrieve this server can answer as asked."""
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    answer = f"this server answers a retrieve with {DICOM_MULTIPART}"
    require_acceptable(request.headers, DICOM_MULTIPART, answer=answer)
    return platform, source
