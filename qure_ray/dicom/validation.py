"""The validation table: every rule an uploaded instance must pass, with its code and HTTP status.

Each rule names the tag it checks; `Rule.violation(...)` builds the message that names the tag, the bad
value and what is expected, so the same text reaches the HTTP reply and the catalog's event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qure_ray.errors import InvalidInstanceError, Violation


@dataclass(frozen=True)
class Rule:
    code: str
    tag: str
    expectation: str
    http_status: int = 400

    def violation(self, found: str) -> Violation:
        return Violation(
            code=self.code,
            tag=self.tag,
            message=f"{self.tag}: {found}; expected {self.expectation}",
            http_status=self.http_status,
        )

    def fail(self, found: str) -> InvalidInstanceError:
        return InvalidInstanceError(self.violation(found))


class Rules(Enum):
    """The table. Add a rule here, never as a free-standing string elsewhere."""

    NOT_DICOM = Rule(
        "not-dicom",
        "File preamble",
        "a DICOM Part 10 file: 128-byte preamble, 'DICM', then the File Meta Information group",
    )
    UNREADABLE = Rule("unreadable", "Data set", "a data set that can be parsed to its end")
    TOO_LARGE = Rule("too-large", "Instance size", "at most the configured per-instance limit", 413)
    MISSING_UID = Rule("missing-uid", "UID", "the Study, Series and SOP Instance UIDs to be present")
    MALFORMED_UID = Rule(
        "malformed-uid",
        "UID",
        "digits and dots, no leading zeros in a component, at most 64 characters (PS3.5 9.1)",
    )
    SOP_MISMATCH = Rule(
        "sop-mismatch",
        "(0002,0003) MediaStorageSOPInstanceUID",
        "the same UID as (0008,0018) SOPInstanceUID",
    )
    NO_PIXEL_DATA = Rule("no-pixel-data", "(7FE0,0010) PixelData", "an image: Pixel Data must be present")
    MISSING_IMAGE_ATTRIBUTE = Rule(
        "missing-image-attribute",
        "Image Pixel module",
        "Rows, Columns, BitsAllocated, SamplesPerPixel and PhotometricInterpretation with valid values",
    )
    PIXEL_DATA_SHORT = Rule(
        "pixel-data-short",
        "(7FE0,0010) PixelData",
        "Rows x Columns x SamplesPerPixel x BitsAllocated/8 x NumberOfFrames bytes",
    )
    DUPLICATE_CONFLICT = Rule(
        "duplicate-conflict",
        "(0008,0018) SOPInstanceUID",
        "a new UID for new content: this source already stored different content under this UID",
        409,
    )
