"""The DICOMweb Store Instances Response (PS3.18 §10.5.3, Table 10.5.3-1) as DICOM JSON."""

from __future__ import annotations

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
