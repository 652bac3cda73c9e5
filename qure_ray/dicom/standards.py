"""Which SOP classes and transfer syntaxes the platform accepts (PS3.4 Annex B, PS3.5 §10 / Annex A), and the body
part an object that codes its anatomy names (PS3.16 Annex L)."""

from __future__ import annotations

import functools

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

_STORAGE = "1.2.840.10008.5.1.4.1.1."

IMAGE_STORAGE_SOP_CLASSES: dict[str, str] = {
    _STORAGE + "1": "Computed Radiography Image Storage",
    _STORAGE + "1.1": "Digital X-Ray Image Storage - For Presentation",
    _STORAGE + "1.1.1": "Digital X-Ray Image Storage - For Processing",
    _STORAGE + "1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    _STORAGE + "1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    _STORAGE + "1.3": "Digital Intra-Oral X-Ray Image Storage - For Presentation",
    _STORAGE + "2": "CT Image Storage",
    _STORAGE + "2.1": "Enhanced CT Image Storage",
    _STORAGE + "2.2": "Legacy Converted Enhanced CT Image Storage",
    _STORAGE + "3.1": "Ultrasound Multi-frame Image Storage",
    _STORAGE + "4": "MR Image Storage",
    _STORAGE + "4.1": "Enhanced MR Image Storage",
    _STORAGE + "6.1": "Ultrasound Image Storage",
    _STORAGE + "7": "Secondary Capture Image Storage",
    _STORAGE + "7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    _STORAGE + "7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    _STORAGE + "7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    _STORAGE + "7.4": "Multi-frame True Color Secondary Capture Image Storage",
    _STORAGE + "12.1": "X-Ray Angiographic Image Storage",
    _STORAGE + "12.2": "X-Ray Radiofluoroscopic Image Storage",
    _STORAGE + "20": "Nuclear Medicine Image Storage",
    _STORAGE + "128": "Positron Emission Tomography Image Storage",
    _STORAGE + "77.1.1": "VL Endoscopic Image Storage",
    _STORAGE + "77.1.4": "VL Photographic Image Storage",
}

NATIVE_TRANSFER_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
)
JPEG_LS = frozenset({JPEGLSLossless, JPEGLSNearLossless})
JPEG_FAMILY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}) | JPEG_LS
"""Frames whose header is a JPEG (or JPEG-LS) start-of-frame segment."""
JPEG2000_FAMILY = frozenset({JPEG2000Lossless, JPEG2000})
"""Frames that are JPEG 2000 codestreams."""
COMPRESSED_TRANSFER_SYNTAXES = JPEG_FAMILY | JPEG2000_FAMILY | {RLELossless}
SUPPORTED_TRANSFER_SYNTAXES = NATIVE_TRANSFER_SYNTAXES | COMPRESSED_TRANSFER_SYNTAXES
LITTLE_ENDIAN_NATIVE = NATIVE_TRANSFER_SYNTAXES - {ExplicitVRBigEndian}
FRAME_MEDIA_TYPES: dict[str, str] = {
    **dict.fromkeys(JPEG_FAMILY - JPEG_LS, "image/jpeg"),
    **dict.fromkeys(JPEG_LS, "image/jls"),
    **dict.fromkeys(JPEG2000_FAMILY, "image/jp2"),
    RLELossless: "image/dicom-rle",
}
"""The media type of a compressed frame sent as stored (PS3.18 Table 8.7.3-2)."""

SUPPORTED_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "PALETTE COLOR",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "YBR_PARTIAL_420",
    }
)


@functools.cache
def _body_parts_by_code() -> dict[tuple[str, str], str]:
    """Annex L read backwards: an anatomic region's SNOMED code → its Body Part Examined term (where two terms share
    a code, the one its meaning names: CHEST, not THORAX). The table is highdicom's (kept current with the
    standard; a private module, hence `highdicom>=0.28`), imported only when an object needs it."""
    from highdicom._standard_utils import get_anatomic_region_map

    terms: dict[tuple[str, str], str] = {}
    for term, (code, _) in get_anatomic_region_map().items():
        key = (str(code.scheme_designator), str(code.value))
        if key not in terms or term == str(code.meaning).upper():
            terms[key] = term
    return terms


def _term_of(item: Dataset) -> str:
    """The term of one coded anatomic region; an SRT code (SNOMED RT, in objects before 2019) by its SCT twin."""
    scheme, value = str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeValue", ""))
    terms = _body_parts_by_code()
    if scheme == "SRT" and value:
        from pydicom.sr.coding import Code  # here: it loads pydicom's code tables, 60k objects every GC would scan

        wanted = Code(value, "SRT", "")
        return next((term for (s, v), term in terms.items() if Code(v, s, "") == wanted), "")
    return terms.get((scheme, value), "")


def body_part(dataset: Dataset) -> str:
    """Body Part Examined, upper case, or the term of the anatomy the object codes instead (enhanced objects)."""
    examined = str(dataset.get("BodyPartExamined", "") or "").strip()
    return (examined or body_part_of_anatomy(dataset)).upper()


def body_part_of_anatomy(dataset: Dataset) -> str:
    """The Body Part Examined term of an object that codes its anatomy instead (Anatomic Region Sequence, top-level
    or in the Frame Anatomy functional group, shared or of the first frame, as enhanced CT and MR do and a legacy
    conversion leaves it), or "" when there is none or its code is not in Annex L."""
    region = dataset.get("AnatomicRegionSequence")
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if region:
            break
        items = dataset.get(groups)
        anatomy = items[0].get("FrameAnatomySequence") if items else None
        region = anatomy[0].get("AnatomicRegionSequence") if anatomy else None
    return _term_of(region[0]) if region else ""
