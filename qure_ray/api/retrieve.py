"""`GET /studies/{study}/series/{series}/instances/{sop}`: WADO-RS retrieve of one stored original.

It is what the RetrieveURLs of a STOW-RS reply point at; a source sees only its own instances.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from qure_ray.api.auth import authenticate
from qure_ray.api.platform import Platform
from qure_ray.dicom.multipart import dicom_multipart
from qure_ray.errors import NotFoundError


async def get_instance(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    study, series, sop = (request.path_params[name] for name in ("study", "series", "sop"))
    record = await platform.find_instance(source, sop)
    if record is None or record.study_uid != study or record.series_uid != series:
        raise NotFoundError(f"no instance {sop} in series {series} of study {study} for this source")
    data = await asyncio.to_thread(platform.store.get, record.object_key)
    body, media_type = dicom_multipart([data])
    return Response(body, media_type=media_type)
