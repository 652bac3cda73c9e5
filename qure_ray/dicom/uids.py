"""DICOM UID syntax (PS3.5 §9.1): digits and dots, no leading zeros in a component, at most 64 chars."""

from __future__ import annotations

import re

from qure_ray.errors import BadRequestError

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid UID; such a UID is also safe as an object-store key component."""
    # fullmatch: "$" also matches before a final newline, so "1.2\n" passed
    return isinstance(value, str) and len(value) <= UID_MAX_LENGTH and bool(UID_PATTERN.fullmatch(value))


def require_uid(value: str, what: str = "UID") -> str:
    """`value` when it is a valid UID; else `BadRequestError` (400) naming what was expected."""
    if not is_valid_uid(value):
        raise BadRequestError(f"{value[:80]!r} is not a DICOM {what} (digits and dots, at most 64 characters)")
    return value
