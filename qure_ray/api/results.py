"""`GET /results/{uid}` and `GET /results/v2/{uid}`: the state or the result of an instance or a series.

`uid` is a SOPInstanceUID (one result per image, chest X-ray) or a SeriesInstanceUID (one result per
series, head CT); any SOPInstanceUID of a per-series use case answers with its series' result.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from qure_ray.api.asset_urls import AssetSigner, file_urls, public_base_url
from qure_ray.api.auth import authenticate
from qure_ray.api.errors import error_response
from qure_ray.api.platform import Platform
from qure_ray.dicom.uids import require_uid
from qure_ray.errors import NotFoundError
from qure_ray.outputs import result_body
from qure_ray.records import InstanceState, ResultRecord


async def get_result(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    found = await platform.lookup_result(source, require_uid(request.path_params["uid"]))
    if found.result is not None:
        return _answer(request, platform, found.result, list(found.originals))
    if found.state is not None:
        return _pending(f"the instance is {found.state.value}; ask again shortly", found.state.value)
    if not found.found:
        raise NotFoundError(
            f"no instance with SOPInstanceUID {found.uid}, and no series with that SeriesInstanceUID, has been "
            "uploaded by this source"
        )
    size = found.series_size
    if found.series_started:
        return _pending(f"the series ({size} instances) is being processed; ask again shortly", "processing")
    quiet = platform.settings.series_quiet_period_s
    return _pending(
        f"the series has {size} instances and waits to start: call GET /compute/{found.series_uid} when all "
        f"are uploaded, or it starts by itself {quiet:g} s after the last one",
        InstanceState.HELD.value,
    )


def _pending(message: str, state: str) -> JSONResponse:
    return JSONResponse({"message": message, "status": state}, status_code=202, headers={"Retry-After": "2"})


def _answer(request: Request, platform: Platform, result: ResultRecord, original_keys: list[str]) -> JSONResponse:
    """A final result: 200 with findings, 206 unusable (with assets that say why), 400 unsupported, 500 failed."""
    if result.state is InstanceState.UNSUPPORTED:
        return error_response(400, result.reason or "no use case for this image", state=result.state.value)
    if result.state is InstanceState.FAILED:
        return error_response(500, f"processing failed: {result.reason}", state=result.state.value)
    settings = platform.settings
    files = file_urls(
        signer=AssetSigner(settings.url_signing_key, settings.asset_url_expiry_s),
        store=platform.store,
        base_url=public_base_url(request, settings.public_url),
        assets=result.assets,
        original_keys=original_keys,
    )
    if result.state is InstanceState.UNUSABLE:
        message = f"the image is unusable: {result.reason}"
        return error_response(206, message, state=result.state.value, result={"files": files})
    return JSONResponse(result_body(result, files=files))
