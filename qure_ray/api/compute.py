"""`GET /compute/{SeriesInstanceUID}`: start a per-series use case (head CT) now, as the Qure API does.

200 the first time, 304 once the series has started (by an earlier call or its quiet period), 404 when
this source has uploaded no instance of that series. Without the call a series starts by itself after
`QURE_SERIES_QUIET_PERIOD_S` with no new instance.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qure_ray.api.auth import authenticate
from qure_ray.api.platform import Platform
from qure_ray.dicom.uids import require_uid
from qure_ray.errors import NotFoundError
from qure_ray.records import SeriesStart


async def get_compute(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    series_uid = require_uid(request.path_params["series"], "SeriesInstanceUID")
    outcome = await platform.start_series(source, series_uid)
    if outcome is SeriesStart.UNKNOWN:
        raise NotFoundError(f"no instance of series {series_uid} has been uploaded by this source")
    if outcome is SeriesStart.ALREADY_STARTED:
        return Response(status_code=304)
    return JSONResponse(
        {
            "message": f"series {series_uid} started; GET /results/{series_uid} for its result",
            "status": "started",
            "series_instance_uid": series_uid,
        }
    )
