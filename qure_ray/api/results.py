"""`GET /results/{uid}` and `GET /results/v2/{uid}`: the state or the result of one instance."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from qure_ray.api.asset_urls import AssetSigner, file_urls
from qure_ray.api.auth import authenticate
from qure_ray.api.errors import error_response
from qure_ray.api.platform import Platform
from qure_ray.dicom.uids import is_valid_uid
from qure_ray.errors import BadRequestError, NotFoundError
from qure_ray.outputs import result_body
from qure_ray.records import InstanceState


async def get_result(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    source = authenticate(request.headers, platform.settings.tokens)
    uid = request.path_params["uid"]
    if not is_valid_uid(uid):
        raise BadRequestError(f"{uid[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    record = await platform.find_instance(source, uid)
    if record is None:
        raise NotFoundError(f"no instance with SOPInstanceUID {uid} has been uploaded by this source")
    if not record.state.is_final:
        body = {"message": f"the instance is {record.state.value}; ask again shortly", "status": record.state.value}
        return JSONResponse(body, status_code=202, headers={"Retry-After": "2"})
    result = await platform.find_result(source, uid)
    reason = result.reason if result else record.reason
    if record.state is InstanceState.UNSUPPORTED:
        return error_response(400, reason or "no use case for this image", state=record.state.value)
    if record.state is InstanceState.FAILED:
        return error_response(500, f"processing failed: {reason}", state=record.state.value)
    if result is None:  # pragma: no cover - a final state is written with its result in one batch
        raise NotFoundError(f"the result of {uid} is missing")
    settings = platform.settings
    files = file_urls(
        signer=AssetSigner(settings.url_signing_key, settings.asset_url_expiry_s),
        store=platform.store,
        base_url=str(request.base_url),
        assets=result.assets,
        original_key=record.object_key,
    )
    if record.state is InstanceState.UNUSABLE:
        message = f"the image is unusable: {reason}"
        return error_response(206, message, state=record.state.value, result={"files": files})
    return JSONResponse(result_body(result, files=files))
