from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from qure_ray.dicom.synthetic import chest_dx, to_bytes
from qure_ray.models import load_card
from qure_ray.outputs.content import ReportContent
from qure_ray.outputs.dicom_objects import encapsulated_pdf, secondary_capture, structured_report
from qure_ray.outputs.documents import THUMBNAIL_PX, pdf_report, png
from qure_ray.outputs.overlay import display_image, overlay
from qure_ray.paths import SHIPPED_MODELS_DIR
from qure_ray.records import InstanceState, ModelInfo, ResultRecord, TriageStatus, UseCase

CARD = load_card(SHIPPED_MODELS_DIR / "qxr-densenet" / "model.yaml")


@pytest.fixture(scope="module")
def source() -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(chest_dx(seed=3, size=256)))


@pytest.fixture(scope="module")
def content(source: pydicom.Dataset) -> ReportContent:
    scores = dict.fromkeys(CARD.label_names, 0.1) | {"nodule": 0.9, "pneumothorax": 0.7}
    decisions = {name: score >= 0.5 for name, score in scores.items()}
    result = ResultRecord(
        source="s", sop_uid=source.SOPInstanceUID, usecase=UseCase.QXR, state=InstanceState.DONE,
        triage_status=TriageStatus.CRITICAL, scores=scores, decisions=decisions,
        model=ModelInfo(name=CARD.name, version=CARD.version, trained=False),
    )  # fmt: skip
    heatmaps = np.zeros((8, 7, 7), np.float16)
    heatmaps[0, 2, 2] = 1.0  # nodule, upper left
    return ReportContent.from_result(result, CARD, heatmaps)


def dciodvfy_errors(data: bytes, tmp_path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    assert tool, "dicom3tools' dciodvfy is missing: make test installs it (scripts/install-test-peers)"
    path = tmp_path / "object.dcm"
    path.write_bytes(data)
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_overlay_colours_only_where_positive_heat_is(source: pydicom.Dataset, content: ReportContent) -> None:
    rgb = overlay(source, content)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    upper_left, lower_right = rgb[91, 91].astype(int), rgb[230, 230].astype(int)  # heat peak: cell (2, 2) of 7
    assert upper_left[0] - upper_left[2] > 60  # red nodule heat
    assert abs(int(lower_right[0]) - int(lower_right[2])) < 10  # untouched grayscale
    assert rgb[5:40, 5:100].std() > 20  # the legend is burned in


def test_secondary_capture_is_valid_and_references_the_source(
    source: pydicom.Dataset, content: ReportContent, tmp_path: Path
) -> None:
    data = secondary_capture(source, overlay(source, content), content)
    assert dciodvfy_errors(data, tmp_path) == []
    sc = pydicom.dcmread(io.BytesIO(data))
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.SeriesInstanceUID != source.SeriesInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.pixel_array.shape == (256, 256, 3)


def test_structured_report_has_one_evaluation_and_score_per_label(
    source: pydicom.Dataset, content: ReportContent, tmp_path: Path
) -> None:
    data = structured_report([source], content)
    assert dciodvfy_errors(data, tmp_path) == []
    sr = hd.sr.srread(io.BytesIO(data))
    text = str(pydicom.dcmread(io.BytesIO(data)))
    assert text.count("Probability score") == len(CARD.labels) and "Present" in text and "Absent" in text
    assert CARD.name in text and sr.StudyInstanceUID == source.StudyInstanceUID
    groups = sr.content.get_image_measurement_groups()
    assert [group.finding_type.value for group in groups] == CARD.label_names
    for group in groups:  # each finding names the algorithm that made it, once (TID 4019 in the group, not repeated)
        for concept, value in ((codes.DCM.AlgorithmName, CARD.name), (codes.DCM.AlgorithmVersion, CARD.version)):
            items = hd.sr.utils.find_content_items(group[0], name=concept, recursive=True)
            assert [item.TextValue for item in items] == [value]


def test_pdf_report_and_its_encapsulation(source: pydicom.Dataset, content: ReportContent, tmp_path: Path) -> None:
    study = {"Accession": "ACC0001", "Modality": "DX"}
    pdf = pdf_report(study=study, content=content, overlay=overlay(source, content))
    assert pdf.startswith(b"%PDF") and b"/DCTDecode" in pdf  # the overlay embedded as JPEG, not deflated again
    pdftotext = shutil.which("pdftotext")
    assert pdftotext, "poppler-utils' pdftotext is missing: make test installs it (scripts/install-test-peers)"
    (tmp_path / "r.pdf").write_bytes(pdf)
    text = subprocess.run([pdftotext, str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True).stdout
    assert "NOT FOR CLINICAL USE" in text and "Nodule" in text and "Pneumothorax" in text
    data = encapsulated_pdf([source], pdf, content)
    assert dciodvfy_errors(data, tmp_path) == []
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.EncapsulatedDocument[: len(pdf)] == pdf and ds.StudyInstanceUID == source.StudyInstanceUID


def test_png_full_and_thumbnail(source: pydicom.Dataset, content: ReportContent) -> None:
    from PIL import Image

    rgb = overlay(source, content)
    assert Image.open(io.BytesIO(png(rgb))).size == (256, 256)
    assert max(Image.open(io.BytesIO(png(rgb, max_side=THUMBNAIL_PX // 2))).size) == THUMBNAIL_PX // 2


def test_unusable_image_assets_say_so_instead_of_findings(source: pydicom.Dataset, tmp_path: Path) -> None:
    from qure_ray.outputs.assets import AssetKind, KeyImage, render_assets

    result = ResultRecord(
        source="s", sop_uid=source.SOPInstanceUID, usecase=UseCase.QXR, state=InstanceState.UNUSABLE,
        reason="ViewPosition LL is a lateral view",
    )  # fmt: skip
    assets = {asset.kind: asset for asset in render_assets([KeyImage(source)], result, CARD)}
    assert AssetKind.REPORT_SR not in assets and AssetKind.SC in assets
    assert dciodvfy_errors(assets[AssetKind.SC].data, tmp_path) == []
    (tmp_path / "r.pdf").write_bytes(assets[AssetKind.REPORT_PDF].data)
    text = subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True).stdout
    assert "unusable" in text and "lateral" in text and "Threshold" not in text
    assert "not assessed" in text and "Routine" not in text  # no triage for an image the model did not read


def test_an_unreadable_patient_birth_date_is_emptied_not_fatal(source: pydicom.Dataset, tmp_path: Path) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from qure_ray.outputs.assets import AssetKind, KeyImage, render_assets

    tag = Tag(0x0010, 0x0030)
    broken = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    broken[tag] = RawDataElement(tag, "DA", 8, b"19xx0231", 0, False, True)
    result = ResultRecord(
        source="s", sop_uid=broken.SOPInstanceUID, usecase=UseCase.QXR, state=InstanceState.DONE,
        scores=dict.fromkeys(CARD.label_names, 0.1), decisions=dict.fromkeys(CARD.label_names, False),
    )  # fmt: skip
    assets = {asset.kind: asset for asset in render_assets([KeyImage(broken)], result, CARD)}
    sc = pydicom.dcmread(io.BytesIO(assets[AssetKind.SC].data))
    assert sc.PatientBirthDate == "" and sc.PatientID == source.PatientID
    assert dciodvfy_errors(assets[AssetKind.SC].data, tmp_path) == []


@pytest.mark.parametrize(
    ("charset", "name", "shown"),
    [
        ("ISO_IR 100", "Müller^Anna^Maria^Dr.", "Name Müller, Dr. Anna Maria"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎", "Name Yamada, Tarou"),
        ("ISO_IR 101", "Wróbel^Łukasz", "Name Wróbel, Łukasz"),
        ("ISO_IR 144", "Иванова^Анна", "Name Иванова, Анна"),
        ("ISO_IR 126", "Παπαδόπουλος^Νίκος", "Name Παπαδόπουλος, Νίκος"),
        ("ISO_IR 192", "Nguyễn^Thị Minh", "Name Nguyễn, Thị Minh"),
        ("ISO_IR 192", "=山田^太郎", "Name not shown: characters outside this report's font"),
        ("ISO_IR 138", "כהן^דוד", "Name not shown: characters outside this report's font"),
        ("ISO_IR 127", "محمد^علي", "Name not shown: characters outside this report's font"),
        ("ISO_IR 192", "Mu\u0308ller^Anna", "Name Müller, Anna"),
    ],
    ids=[
        "latin-1",
        "japanese-with-romaji",
        "latin-2",
        "cyrillic",
        "greek",
        "vietnamese",
        "ideographic-only",
        "hebrew-right-to-left",
        "arabic-joined",
        "decomposed-umlaut",
    ],
)
def test_the_pdf_report_says_whose_it_is(
    source: pydicom.Dataset, tmp_path: Path, charset: str | list[str], name: str, shown: str
) -> None:
    """A report downloaded by a partner is read away from the PACS's header: it names the patient."""
    from qure_ray.outputs.assets import AssetKind, KeyImage, render_assets

    patient = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    patient.SpecificCharacterSet = charset
    patient.PatientName, patient.PatientID, patient.PatientBirthDate = name, "MRN-0042", "19700102"
    patient.PatientSex, patient.StudyDate = "F", "20260301"
    patient = pydicom.dcmread(io.BytesIO(to_bytes(patient)))  # the name encoded as a PACS would send it
    result = ResultRecord(
        source="s", sop_uid=patient.SOPInstanceUID, usecase=UseCase.QXR, state=InstanceState.DONE,
        scores=dict.fromkeys(CARD.label_names, 0.1), decisions=dict.fromkeys(CARD.label_names, False),
    )  # fmt: skip
    assets = {asset.kind: asset for asset in render_assets([KeyImage(patient)], result, CARD)}
    (tmp_path / "r.pdf").write_bytes(assets[AssetKind.REPORT_PDF].data)
    text = subprocess.run(["pdftotext", "-raw", str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True).stdout
    text = " ".join(text.split()).replace("Patient name", "Name")
    assert shown in text and "Patient ID MRN-0042" in text and "Birth date 1970-01-02" in text
    assert "Sex female" in text and "Study date 2026-03-01" in text


def _with_raw(source: pydicom.Dataset, values: dict[str, tuple[str, bytes]]) -> pydicom.Dataset:
    """A copy of `source` with elements as a file would hold them (pydicom reads them only when asked)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    copy = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    for keyword, (vr, value) in values.items():
        tag = Tag(keyword)
        copy[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    return copy


@pytest.mark.parametrize(
    ("keyword", "vr", "value", "copied"),
    [
        ("StudyDate", "DA", b"2001.01.31", "20010131"),  # ACR-NEMA, which pydicom reads
        ("StudyDate", "DA", b" 20010131", "20010131"),
        ("StudyDate", "DA", b"20010131\\20010201", "20010131"),  # one value where the IOD takes one
        ("StudyDate", "DA", b"20011331", ""),
        ("StudyTime", "TM", b"12:30:05", "123005"),  # ACR-NEMA, which pydicom refuses
        ("StudyTime", "TM", b"123005.", "123005"),  # pydicom and dciodvfy read it; not PS3.5's form
        ("StudyTime", "TM", b"12", "12"),
        ("StudyTime", "TM", b"123005.123456", "123005.123456"),
        ("AcquisitionDateTime", "DT", b"20010131123005.5+0100", "20010131123005.5+0100"),
        ("AcquisitionDateTime", "DT", b"2001", "2001"),
        ("AcquisitionDateTime", "DT", b"2001.01.31", ""),
        ("AcquisitionDateTime", "DT", b"20010131123005.", "20010131123005"),
    ],
)
def test_outputs_copy_dates_and_times_in_dicom_form(
    source: pydicom.Dataset, keyword: str, vr: str, value: bytes, copied: str
) -> None:
    from qure_ray.outputs.dicom_objects import as_output_source

    assert str(as_output_source(_with_raw(source, {keyword: (vr, value)}))[keyword].value) == copied


def test_outputs_of_a_source_with_legacy_dates_pass_the_reference_validator(
    source: pydicom.Dataset, tmp_path: Path
) -> None:
    """pydicom reads `2001.01.31` as a date; copied as it is, the outputs carried a DA dciodvfy refuses, and a
    second StudyDate value made every output fail."""
    from qure_ray.outputs.assets import AssetKind, KeyImage, render_assets

    legacy = _with_raw(source, {
        "StudyDate": ("DA", b"2001.01.31\\2001.02.01"), "StudyTime": ("TM", b"12:30:05"),
        "PatientBirthDate": ("DA", b" 19700102"),
    })  # fmt: skip
    result = ResultRecord(
        source="s", sop_uid=legacy.SOPInstanceUID, usecase=UseCase.QXR, state=InstanceState.DONE,
        scores=dict.fromkeys(CARD.label_names, 0.1), decisions=dict.fromkeys(CARD.label_names, False),
    )  # fmt: skip
    assets = {asset.kind: asset for asset in render_assets([KeyImage(legacy)], result, CARD)}
    for kind in (AssetKind.SC, AssetKind.REPORT_SR, AssetKind.REPORT_DCM):
        output = pydicom.dcmread(io.BytesIO(assets[kind].data))
        assert (output.StudyDate, output.StudyTime, output.PatientBirthDate) == ("20010131", "123005", "19700102")
        assert dciodvfy_errors(assets[kind].data, tmp_path) == [], kind


def test_a_series_key_slices_get_numbered_assets_with_their_media_types(
    source: pydicom.Dataset, content: ReportContent
) -> None:
    from qure_ray.outputs.assets import KeyImage, render_assets

    second = pydicom.dcmread(io.BytesIO(chest_dx(seed=4, size=256)))
    result = ResultRecord(
        source="s", sop_uid=source.SOPInstanceUID, usecase=UseCase.QXR, state=InstanceState.DONE,
        triage_status=TriageStatus.CRITICAL, scores={f.name: f.score for f in content.findings},
        decisions={f.name: f.positive for f in content.findings},
        model=ModelInfo(name=CARD.name, version=CARD.version, trained=False),
    )  # fmt: skip
    heat = np.zeros((len(CARD.label_names), 7, 7), np.float16)
    assets = render_assets([KeyImage(source, heat), KeyImage(second, heat)], result, CARD)
    objects = {a.name: pydicom.dcmread(io.BytesIO(a.data)) for a in assets if a.name.endswith(".dcm")}
    first, other = objects["sc.dcm"], objects["sc_2.dcm"]  # one overlay series, an instance per key slice
    assert first.SeriesInstanceUID == other.SeriesInstanceUID and (first.InstanceNumber, other.InstanceNumber) == (1, 2)
    cited = [item.ReferencedSOPInstanceUID for item in objects["report_pdf.dcm"].SourceInstanceSequence]
    assert cited == [source.SOPInstanceUID, second.SOPInstanceUID]
    assert sorted((a.name, a.media_type) for a in assets) == [
        ("report.pdf", "application/pdf"), ("report_pdf.dcm", "application/dicom"),
        ("report_sr.dcm", "application/dicom"), ("sc.dcm", "application/dicom"), ("sc_2.dcm", "application/dicom"),
        ("sc_full.png", "image/png"), ("sc_full_2.png", "image/png"),
        ("sc_thumbnail.png", "image/png"), ("sc_thumbnail_2.png", "image/png"),
    ]  # fmt: skip


def test_key_slices_that_are_frames_of_one_ct_show_and_cite_their_frames(tmp_path: Path) -> None:
    """An enhanced CT's key slices are frames of one object: each overlay is its frame, each SC and the SR cite
    it by ReferencedFrameNumber, and the object is cited once where a frame is not named."""
    from qure_ray.models.phantoms import head_ct_multiframe, head_ct_series
    from qure_ray.outputs.assets import KeyImage, render_assets

    head = load_card(SHIPPED_MODELS_DIR / "qer-densenet" / "model.yaml")
    bleed = {"intracranial_haemorrhage"}
    ct = pydicom.dcmread(io.BytesIO(head_ct_multiframe(seed=5, findings=bleed, slices=4, size=128)))
    classic = [pydicom.dcmread(io.BytesIO(data)) for data in head_ct_series(seed=5, findings=bleed, slices=4, size=128)]
    by_position = {float(ds.ImagePositionPatient[2]): ds for ds in classic}  # the same slices, one per object

    def slice_at_frame(number: int) -> pydicom.Dataset:
        position = ct.PerFrameFunctionalGroupsSequence[number - 1].PlanePositionSequence[0].ImagePositionPatient
        return by_position[float(position[2])]

    result = ResultRecord(
        source="s", sop_uid=ct.SeriesInstanceUID, usecase=UseCase.QER, state=InstanceState.DONE,
        triage_status=TriageStatus.CRITICAL, scores=dict.fromkeys(head.label_names, 0.9),
        decisions=dict.fromkeys(head.label_names, True), model=head.info,
        slices={f"{ct.SOPInstanceUID}/frames/{n}": dict.fromkeys(head.label_names, 0.9) for n in (2, 3)},
    )  # fmt: skip
    assets = render_assets([KeyImage(ct, None, 2), KeyImage(ct, None, 3)], result, head)
    by_name = {a.name: a.data for a in assets}
    objects = {name: pydicom.dcmread(io.BytesIO(data)) for name, data in by_name.items() if name.endswith(".dcm")}
    for name, frame in (("sc.dcm", 2), ("sc_2.dcm", 3)):
        (reference,) = objects[name].SourceImageSequence
        assert (reference.ReferencedSOPInstanceUID, reference.ReferencedFrameNumber) == (ct.SOPInstanceUID, frame)
        shown = objects[name].pixel_array[64:, :, 0]  # below the legend: the frame's own pixels
        assert np.array_equal(shown, display_image(slice_at_frame(frame), head.preprocessing.windowing)[64:])
        assert list(objects[name].PatientOrientation) == ["L", "P"]  # from the Plane Orientation group: axial
        assert dciodvfy_errors(by_name[name], tmp_path) == [], name
    cited = [item.ReferencedSOPInstanceUID for item in objects["report_pdf.dcm"].SourceInstanceSequence]
    assert cited == [ct.SOPInstanceUID]
    sr = objects["report_sr.dcm"]
    frames = {int(frame) for item in sr.iterall() if item.keyword == "ReferencedFrameNumber" for frame in
              (item.value if isinstance(item.value, list | pydicom.multival.MultiValue) else [item.value])}  # fmt: skip
    assert frames == {2, 3}
    procedure = {item.value for item in sr.iterall() if item.keyword == "CodeValue"}
    assert "24725-4" in procedure  # CT Head: what the head CT model read
    assert dciodvfy_errors(by_name["report_sr.dcm"], tmp_path) == []


def _done(ds: pydicom.Dataset) -> ResultRecord:
    return ResultRecord(
        source="s", sop_uid=ds.SOPInstanceUID, usecase=UseCase.QXR, state=InstanceState.DONE,
        triage_status=TriageStatus.ROUTINE, scores=dict.fromkeys(CARD.label_names, 0.1),
        decisions=dict.fromkeys(CARD.label_names, False),
        model=ModelInfo(name=CARD.name, version=CARD.version, trained=False),
    )  # fmt: skip


def test_a_source_without_its_type_2_patient_and_study_attributes_gets_every_asset(
    source: pydicom.Dataset, tmp_path: Path
) -> None:
    """Ingest does not require them; highdicom's SR read PatientBirthDate and failed the whole result."""
    from qure_ray.outputs.assets import AssetKind, KeyImage, render_assets

    bare = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        delattr(bare, keyword)
    assets = {asset.kind: asset for asset in render_assets([KeyImage(bare)], _done(bare), CARD)}
    sr = pydicom.dcmread(io.BytesIO(assets[AssetKind.REPORT_SR].data))
    assert sr.PatientBirthDate == "" and sr.AccessionNumber == "" and sr.PatientID == source.PatientID
    assert "PatientBirthDate" not in bare  # the outputs' copy got the empty elements, not the caller's data set
    for kind in (AssetKind.SC, AssetKind.REPORT_SR, AssetKind.REPORT_DCM):
        assert dciodvfy_errors(assets[kind].data, tmp_path) == [], kind


def test_the_encapsulated_pdf_keeps_the_source_character_set(
    source: pydicom.Dataset, content: ReportContent, tmp_path: Path
) -> None:
    utf8 = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    utf8.SpecificCharacterSet = "ISO_IR 192"
    utf8.PatientName = "Müller^Jürgen=山田^太郎"
    data = encapsulated_pdf([utf8], b"%PDF-1.4 stand-in", content)
    assert dciodvfy_errors(data, tmp_path) == []
    assert str(pydicom.dcmread(io.BytesIO(data)).PatientName) == "Müller^Jürgen=山田^太郎"


def test_monochrome1_is_windowed_before_it_is_inverted(source: pydicom.Dataset) -> None:
    """The same picture stored as MONOCHROME1 (values and window mirrored) displays as its MONOCHROME2 self."""
    from qure_ray.dicom.pixels import displayed

    plain = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    plain.WindowCenter, plain.WindowWidth = 1500, 2000
    high = (1 << int(plain.BitsStored)) - 1
    mirrored = pydicom.dcmread(io.BytesIO(to_bytes(plain)))
    mirrored.PhotometricInterpretation = "MONOCHROME1"
    mirrored.PixelData = (high - plain.pixel_array.astype(np.int32)).astype(plain.pixel_array.dtype).tobytes()
    mirrored.WindowCenter = high - 1500
    np.testing.assert_allclose(displayed(mirrored), displayed(plain), atol=1e-3)
    assert 0.2 < float(displayed(mirrored).mean()) < 0.8


def test_a_palette_colour_image_is_shown_through_its_lookup_table() -> None:
    from pydicom.data import get_testdata_file

    from qure_ray.dicom.pixels import Windowing, displayed
    from qure_ray.outputs.overlay import display_image

    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))  # PALETTE COLOR, 8 bit
    through_lut = displayed(ds, windowing=Windowing("percentile"))
    indices = ds.pixel_array.astype(np.float32)
    assert through_lut.shape == indices.shape and display_image(ds).dtype == np.uint8
    lut = pydicom.pixels.apply_color_lut(ds.pixel_array, ds)[..., :3] @ np.array([0.299, 0.587, 0.114])
    assert np.corrcoef(through_lut.ravel(), lut.ravel())[0, 1] > 0.99


def test_orientation_comes_from_the_source_or_its_image_orientation_never_a_guess(
    source: pydicom.Dataset, content: ReportContent, tmp_path: Path
) -> None:
    from qure_ray.outputs.dicom_objects import patient_orientation

    axial = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    del axial.PatientOrientation
    axial.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    assert patient_orientation(axial) == ("L", "P")
    axial.ImageOrientationPatient = [0, -1, 0, 0, 0, -1]  # sagittal, rows to the front, columns to the feet
    assert patient_orientation(axial) == ("A", "F")
    del axial.ImageOrientationPatient
    assert patient_orientation(axial) is None
    sc = secondary_capture(axial, overlay(axial, content), content)
    assert pydicom.dcmread(io.BytesIO(sc)).PatientOrientation == ""
    assert dciodvfy_errors(sc, tmp_path) == []
    assert patient_orientation(source) == tuple(source.PatientOrientation)


def test_the_sr_names_one_device_per_model_version_and_a_single_view(
    source: pydicom.Dataset, content: ReportContent
) -> None:
    def observer_and_procedure(data: bytes) -> tuple[str, str]:
        sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))
        items = {str(item.name.value): item for item in sr.content[0].ContentSequence}
        return items["121012"].value, items["121058"].value.value  # Device Observer UID, Procedure reported

    first, second = (observer_and_procedure(structured_report([source], content)) for _ in range(2))
    assert first == second and first[1] == "36554-4"


def test_the_pdf_embeds_the_overlay_at_most_at_print_resolution(content: ReportContent) -> None:
    import re

    from qure_ray.outputs.documents import PDF_IMAGE_PX

    pdf = pdf_report(study={}, content=content, overlay=np.zeros((3000, 2400, 3), np.uint8))
    widths = [int(w) for w in re.findall(rb"/Width (\d+)", pdf)]
    assert widths and max(widths) <= PDF_IMAGE_PX


def test_a_head_ct_slice_is_shown_through_the_window_its_model_read_it_with() -> None:
    """A slice stored with a bone window first: its key-slice image shows the brain, as the model saw it."""
    from qure_ray.models.phantoms import head_ct_phantom, to_dicom

    head = load_card(SHIPPED_MODELS_DIR / "qer-densenet" / "model.yaml")
    result = ResultRecord.without_model("site-a", "1.2.3", InstanceState.UNUSABLE, "for the picture only")
    content = ReportContent.from_result(result, head, None)
    assert content.windowing == head.preprocessing.windowing
    brain = pydicom.dcmread(io.BytesIO(to_dicom(head_ct_phantom(seed=4))))
    bone_first = pydicom.dcmread(io.BytesIO(to_dicom(head_ct_phantom(seed=4))))
    bone_first.WindowCenter, bone_first.WindowWidth = [600, 40], [2800, 80]
    shown = [overlay(ds, content)[200:, :].astype(int) for ds in (brain, bone_first)]  # below the legend
    assert np.array_equal(shown[0], shown[1])


def _assets_of(ds: pydicom.Dataset) -> dict[object, pydicom.Dataset]:
    from qure_ray.outputs.assets import AssetKind, KeyImage, render_assets

    rendered = render_assets([KeyImage(ds)], _done(ds), CARD)
    kinds = (AssetKind.SC, AssetKind.REPORT_SR, AssetKind.REPORT_DCM)
    return {a.kind: pydicom.dcmread(io.BytesIO(a.data)) for a in rendered if a.kind in kinds}


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 6", "DOE^JOHN"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce"),  # PS3.5 H.3.1's own example form
        (["ISO 2022 IR 6", "ISO 2022 IR 149"], "Hong^Gildong=\ud64d^\uae38\ub3d9"),
        (["ISO 2022 IR 6", "ISO 2022 IR 58"], "Zhang^San=\u5f20^\u4e09"),
    ],
)
def test_valid_character_sets_highdicom_does_not_list_still_give_every_output(
    source: pydicom.Dataset, charset: str | list[str], name: str
) -> None:
    """highdicom refused these, and the whole result failed with them."""
    ds = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    reread = pydicom.dcmread(io.BytesIO(to_bytes(ds)))  # as stored: the name encoded in that character set
    for kind, output in _assets_of(reread).items():
        assert output.SpecificCharacterSet == reread.SpecificCharacterSet, kind
        assert output.PatientName.original_string == reread.PatientName.original_string, kind  # byte for byte


def test_patient_sex_outside_the_standard_and_a_two_letter_orientation_give_every_output(
    source: pydicom.Dataset, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    ds.PatientSex = "U"  # common in practice; DICOM has M, F, O
    ds.PatientOrientation = ["A", "FR"]  # legal: mammography, oblique views
    outputs = _assets_of(ds)
    assert all(output.PatientSex == "" for output in outputs.values())
    sc = next(output for output in outputs.values() if output.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7")
    assert list(sc.PatientOrientation) == ["A", "FR"]
    assert ds.PatientSex == "U"  # the caller's data set is left as it was


def test_rendering_again_gives_the_same_objects_and_new_content_new_ones(source: pydicom.Dataset) -> None:
    """A retried outputs task, or a re-run, must not send a PACS a second copy of each object."""
    first, again = _assets_of(source), _assets_of(source)
    uids = {kind: (o.SeriesInstanceUID, o.SOPInstanceUID) for kind, o in first.items()}
    assert uids == {kind: (o.SeriesInstanceUID, o.SOPInstanceUID) for kind, o in again.items()}
    assert len({sop for _, sop in uids.values()}) == 3
    other = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    other.PixelData = bytes(len(other.PixelData))  # the same UIDs, other pixels (an overwrite)
    assert not {sop for _, sop in uids.values()} & {o.SOPInstanceUID for o in _assets_of(other).values()}


def test_a_corrected_header_gives_other_objects(source: pydicom.Dataset) -> None:
    """The same pixels under another patient or study are not the same objects changed: a PACS would keep one."""
    corrected = pydicom.dcmread(io.BytesIO(to_bytes(source)))
    corrected.PatientID = "ANOTHER-PATIENT"
    before = {o.SOPInstanceUID for o in _assets_of(source).values()}
    assert not before & {o.SOPInstanceUID for o in _assets_of(corrected).values()}
