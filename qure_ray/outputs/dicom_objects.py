"""DICOM outputs a PACS shows: the overlay as a Secondary Capture, the findings as a TID 1500 SR, and the
PDF report as an Encapsulated PDF. Each is a pure function of (source data set, content) → Part 10 bytes,
in the source's study, in a new series, referencing the source image, naming the algorithm.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import valuerep
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from qure_ray.dicom.part10 import new_dataset, to_bytes
from qure_ray.dicom.pixels import functional_group_item
from qure_ray.outputs.content import ReportContent
from qure_ray.outputs.documents import PATIENT_SEXES
from qure_ray.records import UseCase

MANUFACTURER = "qure_ray"
SC_SERIES_NUMBER, SR_SERIES_NUMBER, PDF_SERIES_NUMBER = 9001, 9002, 9003
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
_PATIENT_AND_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip


_TEMPORAL = {"DA": valuerep.DA, "TM": valuerep.TM, "DT": valuerep.DT}
_CONFORMANT = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
}
"""PS3.5 §6.2: DA, TM and DT as DICOM 3 writes them."""
_ACR_NEMA_DATE = re.compile(r"\d{4}\.\d{2}\.\d{2}")
_ACR_NEMA_TIME = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")
_PATIENT_SEXES = ("", *PATIENT_SEXES)
_IDENTITY = ("SOPInstanceUID", "SeriesInstanceUID", *_PATIENT_AND_STUDY)


@dataclass(frozen=True)
class OutputUids:
    """The UIDs of one result's outputs, derived from what they are made of: the sources (their UIDs and pixel
    data) and the model. Rendering them again (an outputs task retried after a PACS took some, a re-run of the
    same content) gives the same objects, which a PACS stores once, not a second copy of each."""

    seed: tuple[str, ...]

    @classmethod
    def of(cls, sources: Sequence[Dataset], content: ReportContent, frames: Sequence[int | None] = ()) -> OutputUids:
        """From everything the outputs show: the findings, each source's identity and header fields it copies
        (a corrected header is another object, not the same one changed), a hash of its pixel data, and the
        frames read of multi-frame sources (each source counted once)."""
        findings = [(f.name, round(f.score, 6), f.positive) for f in content.findings]
        seed = [MANUFACTURER, content.model.name, content.model.version, repr(findings), content.unusable_reason or ""]
        seed += [str(frame) for frame in frames if frame is not None]
        for source in _distinct(sources):
            pixels = source.get("PixelData") or b""
            seed += [str(source.get(keyword, "")) for keyword in _IDENTITY]
            seed.append(hashlib.sha256(bytes(pixels)).hexdigest())
        return cls(tuple(seed))

    def uid(self, *what: object) -> str:
        """The UID of the output part `what` names (`"sr"`, `"sc", 2`, ...)."""
        return str(generate_uid(entropy_srcs=[*self.seed, *map(str, what)]))


def _with_charset(output: Dataset, source: Dataset) -> None:
    """The source's Specific Character Set on an output. highdicom is given none (`specific_character_set=None`):
    it checks the source's against a list that lacks valid ones (ISO_IR 6, the ISO 2022 forms of Japanese,
    Korean and Chinese) and refuses the output."""
    if "SpecificCharacterSet" in source:  # else pydicom writes the copied names as Latin-1 (a UTF-8 name breaks)
        output.SpecificCharacterSet = source.SpecificCharacterSet


def as_output_source(source: Dataset) -> Dataset:
    """`source` as the outputs copy it (a copy when anything is changed): every patient and study attribute
    present, empty when the source lacks it, every top-level date/time in DICOM's own form (the ACR-NEMA forms
    `2001.01.31` and `12:30:05` rewritten, spaces around a value dropped), and every value that is no date or
    time left out: emptied, or the first good one kept where the attribute takes one value.

    Outputs copy the patient and study modules from the source. A missing PatientBirthDate (ingest does not
    require one) made highdicom's SR fail, and one malformed made every output fail: either cost the partner the
    whole result. Emptied, not guessed: these attributes are Type 2 in the outputs."""
    rewritten: dict[BaseTag, str | list[str]] = {}
    for element in source:
        if element.VR not in _TEMPORAL or not element.value:
            continue
        values = list(element.value) if element.VM > 1 else [element.value]
        kept = [good for value in values if (good := conformant_temporal(element.VR, str(value).strip()))]
        if _single_valued(element.tag):  # `20010131\20010201` as a StudyDate: highdicom refuses it
            kept = kept[:1]
        if "\\".join(kept) != "\\".join(str(value) for value in values):
            rewritten[element.tag] = kept if len(kept) > 1 else "".join(kept)
    if str(source.get("PatientSex", "") or "") not in _PATIENT_SEXES:  # "U", "Male": highdicom refuses them
        rewritten[Tag("PatientSex")] = ""
    missing = [keyword for keyword in _PATIENT_AND_STUDY if keyword not in source]
    if not rewritten and not missing:
        return source
    copy = Dataset(dict(source.items()))  # a dict of its own: `Dataset(source)` shares the source's
    copy.file_meta = source.file_meta
    for tag, value in rewritten.items():
        copy[tag] = DataElement(tag, source[tag].VR, value)
    for keyword in missing:
        copy[keyword] = _empty(keyword)
    return copy


def conformant_temporal(vr: str, text: str) -> str | None:
    """`text` (a DA, TM or DT value) in DICOM's form, or None when it is not a date or time at all.

    pydicom reads the ACR-NEMA forms DICOM 3 retired (a date `YYYY.MM.DD`; it refuses a time `HH:MM:SS`), and
    copying them as they are makes an output the reference validator (dciodvfy) refuses."""
    if vr == "DA" and _ACR_NEMA_DATE.fullmatch(text):
        text = text.replace(".", "")
    elif vr == "TM" and _ACR_NEMA_TIME.fullmatch(text):
        text = text.replace(":", "")
    if vr in ("TM", "DT") and text.endswith("."):  # `123005.`: seconds, a point and no fraction (pydicom reads it)
        text = text[:-1]
    if not _CONFORMANT[vr].fullmatch(text):
        return None
    try:
        _TEMPORAL[vr](text)
    except ValueError:  # the form is right, the values are not (month 13, hour 25)
        return None
    return text


def _single_valued(tag: BaseTag) -> bool:
    try:
        return dictionary_VM(tag) == "1"
    except KeyError:  # a private tag: whatever its values are
        return False


def _equipment(content: ReportContent) -> hd.ContributingEquipment:
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        manufacturer_model_name=content.model.name,
        software_versions=content.model.version,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        contribution_description=f"AI analysis by {content.model.name} {content.model.version}",
    )


def secondary_capture(
    source: Dataset,
    rgb: np.ndarray,
    content: ReportContent,
    *,
    uids: OutputUids | None = None,
    index: int = 0,
    frame: int | None = None,
) -> bytes:
    """The overlay image (RGB, 8 bit) as Secondary Capture Image Storage. A series result's key slices share
    one series (`uids`), each its own `index`: one overlay series in the PACS, not one per slice. `frame`: the
    frame of a multi-frame source the overlay shows (from 1), which its Source Image Sequence names."""
    uids = uids or OutputUids.of([source], content)
    orientation = patient_orientation(source, frame)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=uids.uid("sc series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.uid("sc", index),
        instance_number=index + 1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),  # highdicom wants one of single letters; the real one is set below
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[_equipment(content)],
        series_description=f"AI overlay ({content.model.name})",
        specific_character_set=None,
    )
    _with_charset(sc, source)
    sc.SourceImageSequence = [_reference(source, frame)]
    if orientation is None:  # Type 2C: unknown, so empty rather than guessed
        sc["PatientOrientation"] = _empty("PatientOrientation")
    else:  # the source's own, which may be "A\FR" (mammography, oblique views): highdicom takes one letter each
        sc.PatientOrientation = list(orientation)
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = source.get("Laterality", "")  # Type 2C: present, empty for an unpaired body part
    sc.ImageComments = content.summary[:10240]
    return to_bytes(sc)


def structured_report(
    sources: Sequence[Dataset],
    content: ReportContent,
    *,
    uids: OutputUids | None = None,
    frames: Sequence[int | None] = (),
) -> bytes:
    """Comprehensive 3D SR, TID 1500: per label a present/absent evaluation and its score.

    Each label's measurement group names the algorithm once (TID 4019); the score inside it does not repeat
    it, which took about a tenth more time to build and write (fastest of six rounds: 115 against 102 ms).

    `sources`: the image read, or a series' key slices; every finding cites them as its source images, with
    the frame read (`frames`, from 1, in order) where a source is a multi-frame object.
    """
    source = sources[0]
    uids = uids or OutputUids.of(sources, content, frames)
    algorithm = hd.sr.AlgorithmIdentification(name=content.model.name, version=content.model.version)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(content), name=content.model.name, manufacturer_name=MANUFACTURER
        ),
    )
    source_images = [
        hd.sr.SourceImageForMeasurementGroup.from_source_image(ds, referenced_frame_numbers=[frame] if frame else None)
        for ds, frame in zip(sources, frames or [None] * len(sources), strict=True)
    ]
    groups = []
    for finding in content.findings:
        finding_code = hd.sr.CodedConcept(value=finding.name, scheme_designator="99QURE", meaning=finding.display)
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=uids.uid("finding", finding.name), identifier=finding.name
                ),
                finding_type=finding_code,
                algorithm_id=algorithm,
                source_images=source_images,
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(
                        name=finding_code, value=codes.SCT.Present if finding.positive else codes.SCT.Absent
                    )
                ],
                measurements=[
                    hd.sr.Measurement(
                        name=hd.sr.CodedConcept(value="score", scheme_designator="99QURE", meaning="Probability score"),
                        value=round(finding.score, 6),
                        unit=hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units"),
                    )
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_PROCEDURES[content.usecase],
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=_distinct(sources),
        content=report,
        series_instance_uid=uids.uid("sr series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.uid("sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"AI findings ({content.model.name})",
        contributing_equipment=[_equipment(content)],
        specific_character_set=None,
    )
    _with_charset(sr, source)
    return to_bytes(sr)


_PROCEDURES = {
    UseCase.QXR: hd.sr.CodedConcept(value="36554-4", scheme_designator="LN", meaning="XR Chest Single view"),
    UseCase.QER: hd.sr.CodedConcept(value="24725-4", scheme_designator="LN", meaning="CT Head"),
}
"""The LOINC code of the procedure an SR reports on, by what the model read: one chest radiograph, or a head CT
(whatever the routing rules took for one, BodyPartExamined or not)."""


def encapsulated_pdf(
    sources: Sequence[Dataset], pdf: bytes, content: ReportContent, *, uids: OutputUids | None = None
) -> bytes:
    """The PDF report as Encapsulated PDF Storage in the sources' study, referencing each source image (the image
    read, or a series' key slices)."""
    source = sources[0]
    uids = uids or OutputUids.of(sources, content)
    now = dt.datetime.now(dt.UTC)
    ds = new_dataset(ENCAPSULATED_PDF_STORAGE, uids.uid("pdf"))
    _with_charset(ds, source)
    for keyword in _PATIENT_AND_STUDY:
        ds[keyword] = source[keyword] if keyword in source else _empty(keyword)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = uids.uid("pdf series")
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDescription = f"AI report ({content.model.name})"
    ds.InstanceNumber = 1
    ds.ConversionType = "SD"
    ds.Manufacturer = MANUFACTURER
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "AI findings report"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.SourceInstanceSequence = [_reference(image) for image in _distinct(sources)]
    return to_bytes(ds)


def _reference(source: Dataset, frame: int | None = None) -> Dataset:
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        reference.ReferencedFrameNumber = frame
    return reference


def _distinct(sources: Sequence[Dataset]) -> list[Dataset]:
    """Each source object once: two key slices of a series may be frames of one multi-frame object."""
    return list({str(source.SOPInstanceUID): source for source in sources}.values())


def device_uid(content: ReportContent) -> str:
    """The same UID for every report of one model version: the SR's observer device is the algorithm."""
    return generate_uid(entropy_srcs=[MANUFACTURER, content.model.name, content.model.version])


_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))
"""Patient directions of +x, +y, +z and their opposites (DICOM's patient coordinates: LPS)."""


def patient_orientation(source: Dataset, frame: int | None = None) -> tuple[str, str] | None:
    """Patient Orientation (the directions of the image's rows and columns): the source's own, else worked
    out from Image Orientation (Patient), top-level or the frame's Plane Orientation functional group (frame
    from 1), else None (unknown: a guess put "feet" markers on axial slices)."""
    given = source.get("PatientOrientation")
    if given and len(given) == 2 and all(str(value) for value in given):
        return str(given[0]), str(given[1])
    plane = functional_group_item(source, "PlaneOrientationSequence", (frame or 1) - 1)
    cosines = source.get("ImageOrientationPatient") or (plane.get("ImageOrientationPatient") if plane else None)
    if not cosines or len(cosines) != 6:
        return None
    return _direction(cosines[:3]), _direction(cosines[3:])


def _direction(cosines: Sequence[float]) -> str:
    """The letter of a direction's main axis (highdicom takes one letter per direction, so an oblique image
    is labelled by its nearest axis)."""
    axis = max(range(3), key=lambda index: abs(float(cosines[index])))
    return _AXIS_LETTERS[axis][float(cosines[axis]) < 0]


def _empty(keyword: str) -> DataElement:
    """A Type 2 element present but empty (what the IOD asks for when the source has no value)."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return DataElement(tag, dictionary_VR(tag), None)
