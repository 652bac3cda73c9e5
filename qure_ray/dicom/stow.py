"""The DICOMweb Store Instances Response (PS3.18 §10.5.3, Table 10.5.3-1) as DICOM JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RETRIEVE_URL = "00081190"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
COERCION_OF_DATA_ELEMENTS = 0xB000


@dataclass(frozen=True)
class StoredInstance:
    sop_class_uid: str
    sop_uid: str
    retrieve_url: str


@dataclass(frozen=True)
class FailedInstance:
    sop_class_uid: str
    sop_uid: str
    failure_reason: int


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _sequence_item(sop_class_uid: str, sop_uid: str, tag: str, element: dict[str, Any]) -> dict[str, Any]:
    return {REFERENCED_SOP_CLASS_UID: _ui(sop_class_uid), REFERENCED_SOP_INSTANCE_UID: _ui(sop_uid), tag: element}


def store_instances_response(
    stored: list[StoredInstance], failed: list[FailedInstance], *, study_url: str | None
) -> tuple[int, dict[str, Any]]:
    """Status (200 all stored, 202 some failed, 409 none stored) and the response data set."""
    body: dict[str, Any] = {}
    if study_url and stored:
        body[RETRIEVE_URL] = {"vr": "UR", "Value": [study_url]}
    if stored:
        body[REFERENCED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                _sequence_item(i.sop_class_uid, i.sop_uid, RETRIEVE_URL, {"vr": "UR", "Value": [i.retrieve_url]})
                for i in stored
            ],
        }
    if failed:
        body[FAILED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                _sequence_item(i.sop_class_uid, i.sop_uid, FAILURE_REASON, {"vr": "US", "Value": [i.failure_reason]})
                for i in failed
            ],
        }
    status = 200 if not failed else (202 if stored else 409)
    return status, body


@dataclass(frozen=True)
class StoreResponse:
    """What a Store Instances Response says, read back (`read_store_response`)."""

    stored: list[str]
    """SOPInstanceUIDs of the ReferencedSOPSequence."""
    failed: list[tuple[str, int]]
    """(SOPInstanceUID, FailureReason) of the FailedSOPSequence."""


def read_store_response(body: bytes | str) -> StoreResponse:
    """The inverse of `store_instances_response`, for any peer's reply: a body that is not a DICOM JSON object
    (empty, HTML, `null`) reads as nothing stored and nothing failed."""
    try:
        parsed = json.loads(body) if body.strip() else {}
    except ValueError:
        parsed = {}
    data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}

    def items(sequence: str) -> list[dict[str, Any]]:
        return [item for item in (data.get(sequence) or {}).get("Value") or [] if isinstance(item, dict)]

    def first(item: dict[str, Any], tag: str) -> Any:
        values = (item.get(tag) or {}).get("Value") or []
        return values[0] if values else None

    return StoreResponse(
        stored=[str(first(item, REFERENCED_SOP_INSTANCE_UID)) for item in items(REFERENCED_SOP_SEQUENCE)],
        failed=[(str(first(item, REFERENCED_SOP_INSTANCE_UID)), int(first(item, FAILURE_REASON) or 0))
                for item in items(FAILED_SOP_SEQUENCE)],
    )  # fmt: skip
