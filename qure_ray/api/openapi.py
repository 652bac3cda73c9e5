"""`GET /openapi.json`: the HTTP API as OpenAPI 3.1 — uploads, results, assets, with schemas and codes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

import qure_ray

_ERROR = {"$ref": "#/components/schemas/Error"}
_AUTH_ERRORS = {
    "401": {"description": "missing or unknown token", "content": {"application/json": {"schema": _ERROR}}},
    "403": {"description": "Source missing or not the token's", "content": {"application/json": {"schema": _ERROR}}},
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ERROR)


_UPLOAD_RESPONSES = {
    "200": _json("at least one file accepted", {"$ref": "#/components/schemas/UploadReply"}),
    "400": _error("no file accepted (the message names the rule), or a malformed body"),
    "409": _error("the same SOPInstanceUID was stored with other content"),
    "413": _error("over the per-instance or per-request size, or too many parts"),
    "415": _error("unsupported Content-Type"),
    "503": _error("the queue is full: retry after Retry-After seconds"),
    **_AUTH_ERRORS,
}
_RETRIEVE_RESPONSES = {
    "200": {"description": 'multipart/related; type="application/dicom": one part per stored original'},
    "400": _error("not a DICOM UID"),
    "404": _error("nothing stored there by this source"),
    "406": _error('Accept admits no multipart/related; type="application/dicom"'),
    **_AUTH_ERRORS,
}
_METADATA_RESPONSES = {
    "200": {"description": "DICOM JSON model, one object per instance; Pixel Data and binary values over 1 KB are "
                           "BulkDataURIs (.../bulkdata/{tag})",
            "content": {"application/dicom+json": {"schema": {"type": "array", "items": {"type": "object"}}}}},
    **{code: _RETRIEVE_RESPONSES[code] for code in ("400", "404")},
    "406": _error("Accept admits neither application/dicom+json nor application/json"),
    **_AUTH_ERRORS,
}  # fmt: skip
_FRAMES_RESPONSES = {
    "200": {"description": "multipart/related, a part per frame in the order asked: as stored (a compressed frame's "
                           "codestream, e.g. image/jls) or, for application/octet-stream without transfer-syntax=*, "
                           "native Explicit VR Little Endian; each part's Content-Type names its transfer-syntax"},
    "400": _error("not a DICOM UID, or a frame list other than distinct whole numbers from 1"),
    "404": _error("nothing stored there by this source, or no such frame"),
    "406": _error("Accept admits neither the frames as stored nor native application/octet-stream"),
    **_AUTH_ERRORS,
}  # fmt: skip
_RENDERING = [
    {"name": "window", "in": "query", "schema": {"type": "string"}, "description": "center,width[,linear]"},
    {"name": "viewport", "in": "query", "schema": {"type": "string"}, "description": "width,height: fitted, never up"},
    {"name": "quality", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
]
_RENDERED_RESPONSES = {
    "200": {"description": "the frame as a picture",
            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "image/png": {"schema": {"type": "string", "format": "binary"}}}},
    "400": _error("not a DICOM UID, more than one frame, or a rendering parameter this server does not apply"),
    "404": _error("nothing stored there by this source, or no such frame"),
    "406": _error("Accept admits neither image/jpeg nor image/png, or the frame cannot be decoded"),
    **_AUTH_ERRORS,
}  # fmt: skip
_STOW_RESPONSES = {
    "200": {"description": "all stored", "content": {"application/dicom+json": {"schema": {"type": "object"}}}},
    "202": {"description": "some failed (FailedSOPSequence with FailureReason)"},
    "409": {"description": "none stored"},
    "400": _error("malformed multipart body"),
    "406": _error("Accept admits neither application/dicom+json nor application/json"),
    "415": _error("multipart/related of a type other than application/dicom"),
    "503": _error("the queue is full"),
    **_AUTH_ERRORS,
}
_UID = {"name": "uid", "in": "path", "required": True, "schema": {"type": "string", "pattern": r"^[0-9.]{1,64}$"}}
_SERIES_PATH = [{**_UID, "name": name} for name in ("study", "series")]
_INSTANCE_PATH = [{**_UID, "name": name} for name in ("study", "series", "sop")]
_RESULT_RESPONSES = {
    "200": _json("done", {"$ref": "#/components/schemas/Result"}),
    "202": _error("queued or processing; ask again after Retry-After"),
    "206": _error("valid modality but the image is unusable; the message says why"),
    "400": _error("no use case for this image"),
    "404": _error("unknown UID, or another source's"),
    "500": _error("processing failed; the message carries the recorded reason"),
    **_AUTH_ERRORS,
}


def spec() -> dict[str, Any]:
    form = {
        "multipart/form-data": {
            "schema": {"type": "object", "additionalProperties": {"type": "string", "format": "binary"}}
        }
    }
    related = {"multipart/related": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "qure_ray", "version": qure_ray.__version__,
                 "description": "Diagnostic AI on medical images; compatible with the Qure.ai Platform API."},
        "components": {
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                          "description": "`Token <token>` or `Bearer <token>`, with a `Source: <source>` header"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["message"],
                          "properties": {"message": {"type": "string"}, "status": {"type": "integer"}}},
                "UploadReply": {
                    "type": "object",
                    "required": ["message", "status", "messages", "series_instance_uids", "detailed_info"],
                    "properties": {
                        "message": {"type": "string"}, "status": {"type": "integer"},
                        "messages": {"type": "object", "additionalProperties": {
                            "type": "object", "properties": {
                                "message": {"type": "string"}, "created": {"type": "boolean"},
                                "metadata": {"type": "object"}, "error": {"type": "object"}}}},
                        "series_instance_uids": {"type": "array", "items": {"type": "string"}},
                        "detailed_info": {"type": "object"},
                    },
                },
                "Result": {
                    "type": "object",
                    "required": ["message", "triage_status", "usecase", "result", "model", "timings"],
                    "properties": {
                        "message": {"type": "string"},
                        "triage_status": {"enum": ["Critical", "Routine"]},
                        "usecase": {"type": "string"},
                        "result": {"type": "object", "properties": {
                            "report": {"type": "object", "properties": {
                                "findings": {"type": "string"}, "impression": {"type": "string"},
                                "findings_list": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}}},
                            "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                            "decisions": {"type": "object", "additionalProperties": {"type": "boolean"}},
                            "files": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string", "format": "uri"}}},
                        }},
                        "model": {"type": "object", "properties": {
                            "name": {"type": "string"}, "version": {"type": "string"}, "trained": {"type": "boolean"},
                            "trained_on": {"type": "string"}}},
                        "series": {"type": "object", "description": "per-series results (head CT) only", "properties": {
                            "series_instance_uid": {"type": "string"}, "slices_read": {"type": "integer"},
                            "key_slices": {"type": "array", "items": {"type": "string"}, "description": "per label, the slice that scored highest: a SOPInstanceUID, or SOPInstanceUID/frames/N for frame N (from 1) of a multi-frame object; files.original and files.sc list one entry per key slice, in this order"},
                            "slice_scores": {"type": "object", "description": "scores by slice, named as in key_slices", "additionalProperties": {"type": "object", "additionalProperties": {"type": "number"}}}}},
                        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
                    },
                },
            },
        },
        "security": [{"token": []}],
        "paths": {
            "/health": {"get": {"summary": "liveness: the ingress answers", "security": [], "responses": {"200": {"description": "alive"}}}},
            "/studies": {"post": {"summary": "upload: Qure form-data, or DICOMweb STOW-RS",
                                  "requestBody": {"content": {**form, **related}}, "responses": {**_UPLOAD_RESPONSES, **_STOW_RESPONSES, "200": _UPLOAD_RESPONSES["200"]}}},
            "/studies/{study}": {"post": {"summary": "DICOMweb STOW-RS into one study",
                                          "parameters": [{**_UID, "name": "study"}],
                                          "requestBody": {"content": related}, "responses": _STOW_RESPONSES},
                                 "get": {"summary": "WADO-RS: the study's stored originals, streamed",
                                         "parameters": [{**_UID, "name": "study"}], "responses": _RETRIEVE_RESPONSES}},
            "/studies/{study}/series/{series}": {"get": {
                "summary": "WADO-RS: the series' stored originals, streamed",
                "parameters": _SERIES_PATH, "responses": _RETRIEVE_RESPONSES}},
            "/studies/{study}/series/{series}/instances/{sop}": {"get": {
                "summary": "WADO-RS: the stored original",
                "parameters": _INSTANCE_PATH, "responses": _RETRIEVE_RESPONSES}},
            "/studies/{study}/metadata": {"get": {
                "summary": "WADO-RS: the metadata of the study's instances",
                "parameters": [{**_UID, "name": "study"}], "responses": _METADATA_RESPONSES}},
            "/studies/{study}/series/{series}/metadata": {"get": {
                "summary": "WADO-RS: the metadata of the series' instances",
                "parameters": _SERIES_PATH, "responses": _METADATA_RESPONSES}},
            "/studies/{study}/series/{series}/instances/{sop}/metadata": {"get": {
                "summary": "WADO-RS: the instance's metadata",
                "parameters": _INSTANCE_PATH, "responses": _METADATA_RESPONSES}},
            "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}": {"get": {
                "summary": "WADO-RS: some of the instance's frames (1-based, comma-separated: 1,3)",
                "parameters": [*_INSTANCE_PATH,
                               {"name": "frames", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": r"^[0-9]+(,[0-9]+)*$"}}],
                "responses": _FRAMES_RESPONSES}},
            "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}": {"get": {
                "summary": "WADO-RS bulk data, as metadata's BulkDataURIs name it: Pixel Data (7FE00010) as all "
                           "the frames (as /frames answers), another value as one application/octet-stream part",
                "parameters": [*_INSTANCE_PATH,
                               {"name": "tag", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": r"^[0-9A-Fa-f]{8}$"}}],
                "responses": {**_FRAMES_RESPONSES, "404": _error("nothing stored there by this source, or no such "
                                                                 "bulk data element")}}},
            "/studies/{study}/series/{series}/instances/{sop}/rendered": {"get": {
                "summary": "WADO-RS rendered: frame 1 as a reader sees it (rescaled, windowed), image/jpeg or image/png",
                "parameters": [*_INSTANCE_PATH, *_RENDERING],
                "responses": _RENDERED_RESPONSES}},
            "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered": {"get": {
                "summary": "WADO-RS rendered: one frame as a reader sees it, image/jpeg or image/png",
                "parameters": [*_INSTANCE_PATH,
                               {"name": "frames", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": r"^[0-9]+$"}}, *_RENDERING],
                "responses": _RENDERED_RESPONSES}},
            "/upload": {"post": {"summary": "upload one instance (application/dicom), a zip, or form-data",
                                 "requestBody": {"content": {"application/dicom": {"schema": {"type": "string", "format": "binary"}},
                                                             "application/zip": {"schema": {"type": "string", "format": "binary"}}, **form}},
                                 "responses": _UPLOAD_RESPONSES}},
            "/results/{uid}": {"get": {"summary": "state or result of a SOPInstanceUID, or of a SeriesInstanceUID (head CT)", "parameters": [_UID], "responses": _RESULT_RESPONSES}},
            "/compute/{series}": {"get": {"summary": "start a head-CT series now (else it starts after QURE_SERIES_QUIET_PERIOD_S)",
                                          "parameters": [{**_UID, "name": "series"}],
                                          "responses": {"200": _json("started", {"type": "object"}), "304": {"description": "already started"},
                                                        "400": _error("not a DICOM UID"), "404": _error("no instance of the series uploaded"), **_AUTH_ERRORS}}},
            "/results/v2/{uid}": {"get": {"summary": "same as /results/{uid}", "parameters": [_UID], "responses": _RESULT_RESPONSES}},
            "/assets/{key}": {"get": {"summary": "a signed asset URL (local storage)", "security": [],
                                      "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                                                     {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
                                                     {"name": "signature", "in": "query", "required": True, "schema": {"type": "string"}}],
                                      "responses": {"200": {"description": "the asset"}, "403": _error("altered or expired URL"),
                                                    "404": _error("another source's or no longer stored")}}},
            "/webhooks": {
                "put": {"summary": "register this source's callback for final results (signed POSTs, retried)",
                        "requestBody": {"required": True, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["url"],
                            "properties": {"url": {"type": "string", "format": "uri"}, "secret": {"type": "string", "minLength": 16}}}}}},
                        "responses": {"200": _json("registered; the secret is shown once", {"type": "object"}),
                                      "400": _error("not an http(s) URL, or a bad secret"), **_AUTH_ERRORS}},
                "get": {"summary": "this source's callback URL", "responses": {"200": _json("the URL", {"type": "object"}),
                                                                               "404": _error("none registered"), **_AUTH_ERRORS}},
                "delete": {"summary": "remove this source's callback", "responses": {"200": _json("removed", {"type": "object"}),
                                                                                     "404": _error("none registered"), **_AUTH_ERRORS}},
            },
            "/ready": {"get": {"summary": "readiness: catalog, object store, queue, job manager and model replicas answer", "security": [],
                               "responses": {"200": {"description": "ready"}, "503": _error("not ready yet")}}},
            "/openapi.json": {"get": {"summary": "this document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
    }  # fmt: skip


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(spec())
