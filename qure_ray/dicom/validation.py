"""The validation table: every rule an uploaded instance must pass.

Each rule has a code (in replies and the catalog), the tag it concerns, what is expected, the HTTP status
of a refusal and the DICOM failure reason it maps to (PS3.18 Table I.2-2; the same values are DIMSE
C-STORE statuses). `Rule.fail(found)` builds the message: the tag, the bad value and what is expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from qure_ray.errors import InvalidInstanceError, Violation


class FailureReason(IntEnum):
    """Store Instances Response FailureReason (0008,1197) values, PS3.18 Table I.2-2."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


@dataclass(frozen=True)
class Rule:
    code: str
    tag: str
    expectation: str
    failure_reason: FailureReason
    http_status: int = 400

    def violation(self, found: str) -> Violation:
        return Violation(
            code=self.code,
            tag=self.tag,
            message=f"{self.tag}: {found}; expected {self.expectation}",
            http_status=self.http_status,
            failure_reason=int(self.failure_reason),
        )

    def fail(self, found: str) -> InvalidInstanceError:
        return InvalidInstanceError(self.violation(found))


_F = FailureReason


class Rules(Enum):
    """The table. Add a rule here, never as a free-standing string elsewhere."""

    NOT_DICOM = Rule(
        "not-dicom",
        "File preamble",
        "a DICOM Part 10 file: 128-byte preamble, 'DICM', then the File Meta Information group",
        _F.CANNOT_UNDERSTAND,
    )
    NO_PREAMBLE = Rule(
        "no-preamble",
        "File Meta Information",
        "a DICOM Part 10 file; this is a bare data set without preamble and file meta "
        "(convert it, e.g. with dcmtk's `dcmconv +F in.dcm out.dcm`)",
        _F.CANNOT_UNDERSTAND,
    )
    UNREADABLE = Rule("unreadable", "Data set", "a data set that can be parsed to its end", _F.CANNOT_UNDERSTAND)
    TOO_LARGE = Rule(
        "too-large", "Instance size", "at most the configured per-instance limit", _F.OUT_OF_RESOURCES, 413
    )
    MISSING_UID = Rule(
        "missing-uid",
        "UID",
        "the Study, Series, SOP Instance and SOP Class UIDs to be present",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    MALFORMED_UID = Rule(
        "malformed-uid",
        "UID",
        "digits and dots, no leading zeros in a component, at most 64 characters (PS3.5 9.1)",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    UID_REUSED = Rule(
        "uid-reused",
        "UID",
        "different Study, Series and SOP Instance UIDs: each names one study, series or instance (PS3.3 C.7)",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    SOP_MISMATCH = Rule(
        "sop-mismatch",
        "(0002,0003) MediaStorageSOPInstanceUID",
        "the same UID as (0008,0018) SOPInstanceUID",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    SOP_CLASS_NOT_SUPPORTED = Rule(
        "sop-class-not-supported",
        "(0008,0016) SOPClassUID",
        "an image storage SOP class (CR, DX, MG, CT, MR, US, XA, RF, NM, PET, SC, VL)",
        _F.SOP_CLASS_NOT_SUPPORTED,
    )
    TRANSFER_SYNTAX_NOT_SUPPORTED = Rule(
        "transfer-syntax-not-supported",
        "(0002,0010) TransferSyntaxUID",
        "a native, deflated, RLE, JPEG (baseline, extended, lossless), JPEG-LS or JPEG 2000 transfer syntax",
        _F.TRANSFER_SYNTAX_NOT_SUPPORTED,
    )
    NO_PIXEL_DATA = Rule(
        "no-pixel-data",
        "(7FE0,0010) PixelData",
        "an image: Pixel Data must be present",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    MISSING_IMAGE_ATTRIBUTE = Rule(
        "missing-image-attribute",
        "Image Pixel module",
        "Rows, Columns, BitsAllocated, SamplesPerPixel and NumberOfFrames > 0",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    PHOTOMETRIC_NOT_SUPPORTED = Rule(
        "photometric-not-supported",
        "(0028,0004) PhotometricInterpretation",
        "MONOCHROME1, MONOCHROME2, RGB, PALETTE COLOR or a YBR colour space",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    PIXEL_DATA_SHORT = Rule(
        "pixel-data-short",
        "(7FE0,0010) PixelData",
        "Rows x Columns x SamplesPerPixel x BitsAllocated/8 x NumberOfFrames bytes",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    )
    PIXEL_DATA_UNDECODABLE = Rule(
        "pixel-data-undecodable",
        "(7FE0,0010) PixelData",
        "compressed frames that decode with the declared transfer syntax",
        _F.CANNOT_UNDERSTAND,
    )
    STUDY_MISMATCH = Rule(
        "study-mismatch",
        "(0020,000D) StudyInstanceUID",
        "the StudyInstanceUID of the request URL (POST /studies/{StudyInstanceUID})",
        _F.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        409,
    )
    DUPLICATE_CONFLICT = Rule(
        "duplicate-conflict",
        "(0008,0018) SOPInstanceUID",
        "a new UID for new content: this source already stored different content under this UID",
        _F.DUPLICATE_SOP_INSTANCE,
        409,
    )
