from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from qure_ray.dicom import read_instance
from qure_ray.dicom.pixels import DATASET_WINDOW, Windowing, decode_grayscale, prepare_for_model, prepare_slices
from qure_ray.models.phantoms import (
    CHEST_FINDINGS,
    HEAD_CT_FINDINGS,
    chest_phantom,
    head_ct_multiframe,
    head_ct_phantom,
    head_ct_series,
    series_slice_findings,
    to_dicom,
)
from tests.unit.fresh_imports import loaded_by_importing

BRAIN_WINDOW = Windowing("fixed", 40, 80)


def test_phantoms_are_deterministic_and_vary_with_the_seed() -> None:
    assert np.array_equal(chest_phantom(seed=1).pixels, chest_phantom(seed=1).pixels)
    assert not np.array_equal(chest_phantom(seed=1).pixels, chest_phantom(seed=2).pixels)
    with pytest.raises(ValueError, match="unknown chest findings"):
        chest_phantom(seed=1, findings={"fracture"})


@pytest.mark.parametrize("finding", CHEST_FINDINGS)
def test_each_chest_finding_changes_the_picture(finding: str) -> None:
    normal = chest_phantom(seed=7).pixels.astype(np.float32)
    abnormal = chest_phantom(seed=7, findings={finding}).pixels.astype(np.float32)
    changed = np.abs(abnormal - normal) > 200
    assert changed.sum() > 30, f"{finding} leaves no visible signature"


def test_cardiomegaly_widens_the_heart() -> None:
    normal, enlarged = chest_phantom(seed=3).pixels, chest_phantom(seed=3, findings={"cardiomegaly"}).pixels
    row = int(normal.shape[0] * 0.6)
    threshold = float(np.median(normal[row]))
    assert (enlarged[row] > threshold).sum() > (normal[row] > threshold).sum() + 10


@pytest.mark.parametrize("finding", HEAD_CT_FINDINGS)
def test_each_head_ct_finding_changes_the_picture(finding: str) -> None:
    normal = head_ct_phantom(seed=5).pixels.astype(np.float32)
    abnormal = head_ct_phantom(seed=5, findings={finding}).pixels.astype(np.float32)
    assert (np.abs(abnormal - normal) > 20).sum() > 30


def test_phantoms_pass_ingest_validation_and_preprocess() -> None:
    chest = to_dicom(chest_phantom(seed=1, findings={"nodule"}))
    metadata = read_instance(chest).metadata
    assert (metadata.modality, metadata.body_part, metadata.view_position) == ("DX", "CHEST", "PA")
    assert prepare_for_model(chest, size=128, windowing=DATASET_WINDOW).std() > 0.05
    ct = to_dicom(
        head_ct_phantom(seed=1, findings={"intracranial_haemorrhage"}), instance_number=3, slice_location_mm=15
    )
    metadata = read_instance(ct).metadata
    assert (metadata.modality, metadata.body_part) == ("CT", "HEAD")
    image = prepare_for_model(ct, size=128, windowing=DATASET_WINDOW)
    assert image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0.05


def test_the_same_seed_is_the_same_patient_with_and_without_a_finding() -> None:
    normal, abnormal = chest_phantom(seed=4).pixels, chest_phantom(seed=4, findings={"nodule"}).pixels
    assert (normal != abnormal).mean() < 0.01  # only the nodule differs: no draw depends on the findings


def test_pleural_effusion_is_a_meniscus_rising_towards_the_chest_wall() -> None:
    for seed in range(4):
        normal = chest_phantom(seed=seed).pixels.astype(np.float32)
        fluid = (chest_phantom(seed=seed, findings={"pleural_effusion"}).pixels - normal) > 300
        rows, columns = np.nonzero(fluid)
        assert rows.min() > 0.4 * normal.shape[0] and rows.max() > 0.6 * normal.shape[0], "fluid at a lung base"
        lateral_first = columns.mean() < normal.shape[1] / 2  # fluid in the image-left lung: its wall is left
        order = np.argsort(columns if lateral_first else -columns)
        lateral, medial = order[: len(order) // 4], order[-len(order) // 4 :]
        assert rows[lateral].min() < rows[medial].min() - 3, "the upper border climbs laterally"


def falx_column(hu: np.ndarray, row: int) -> float:
    brain_row = np.where((hu[row] > 50) & (hu[row] < 300))[0]
    return float(np.median(brain_row))


def ventricle_column(hu: np.ndarray) -> float:
    return float(np.nonzero((hu > -100) & (hu < 15))[1].mean())  # CSF, not air


def test_midline_shift_displaces_the_falx_and_the_ventricles_together() -> None:
    for seed in range(4):
        normal = head_ct_phantom(seed=seed).pixels.astype(np.float32)
        shifted = head_ct_phantom(seed=seed, findings={"midline_shift"}).pixels.astype(np.float32)
        middle = normal.shape[0] // 2
        falx_moved = falx_column(shifted, middle) - falx_column(normal, middle)
        ventricles_moved = ventricle_column(shifted) - ventricle_column(normal)
        air = np.nonzero(normal < -500)[1].mean() - np.nonzero(shifted < -500)[1].mean()
        assert abs(falx_moved) > 5 and abs(ventricles_moved) > 3 and np.sign(falx_moved) == np.sign(ventricles_moved)
        assert air == 0  # the skull stays where it was


def test_head_ct_series_is_one_ordered_series_with_findings_on_its_middle_slices() -> None:
    findings = {"intracranial_haemorrhage", "midline_shift"}
    slices = [pydicom.dcmread(io.BytesIO(data)) for data in head_ct_series(seed=9, findings=findings, slices=12)]
    plain = [pydicom.dcmread(io.BytesIO(data)) for data in head_ct_series(seed=9, findings=set(), slices=12)]
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(ds[tag].value) for ds in slices}) == 1, f"{tag} differs between slices"
    assert len({ds.SOPInstanceUID for ds in slices}) == 12
    assert [ds.InstanceNumber for ds in slices] == list(range(1, 13))
    assert [float(ds.SliceLocation) for ds in slices] == [5.0 * i for i in range(12)]
    assert [float(ds.ImagePositionPatient[2]) for ds in slices] == [5.0 * i for i in range(12)]
    assert {(ds.Modality, ds.BodyPartExamined) for ds in slices} == {("CT", "HEAD")}

    expected = series_slice_findings(findings, slices=12)
    bleeding = [i for i, shown in enumerate(expected) if "intracranial_haemorrhage" in shown]
    shifted = [i for i, shown in enumerate(expected) if "midline_shift" in shown]
    assert bleeding == [4, 5, 6] and shifted == [3, 4, 5, 6, 7, 8]
    changed = [i for i in range(12) if not np.array_equal(slices[i].pixel_array, plain[i].pixel_array)]
    assert changed == shifted  # nothing on the other slices: same head, same noise
    for i in bleeding:  # blood (60-80 HU) where the plain slice has brain
        blood = (slices[i].pixel_array > 55) & (plain[i].pixel_array < 45) & (plain[i].pixel_array > 0)
        assert blood.sum() > 20, f"slice {i} shows no haemorrhage"


def test_series_slice_findings_handles_short_series() -> None:
    both = {"intracranial_haemorrhage", "midline_shift"}
    assert series_slice_findings(both, slices=1) == [frozenset(both)]
    assert series_slice_findings(both, slices=2) == [frozenset(both), frozenset()]
    with pytest.raises(ValueError, match="at least one slice"):
        series_slice_findings(both, slices=0)


def _enhanced_like(data: bytes, *, frames: int = 1) -> bytes:
    """The slice as an enhanced multi-frame object keeps it: Rescale and Window in the functional groups."""
    from qure_ray.dicom.synthetic import to_bytes

    ds = pydicom.dcmread(io.BytesIO(data))
    rescale, window = Dataset(), Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = ds.RescaleSlope, ds.RescaleIntercept, "HU"
    window.WindowCenter, window.WindowWidth = ds.WindowCenter, ds.WindowWidth
    shared = Dataset()
    shared.PixelValueTransformationSequence, shared.FrameVOILUTSequence = [rescale], [window]
    ds.SharedFunctionalGroupsSequence = [shared]
    del ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.PixelData = ds.PixelData * frames
    return to_bytes(ds)


def test_an_enhanced_slice_is_rescaled_and_windowed_from_its_functional_groups() -> None:
    classic = to_dicom(head_ct_phantom(seed=2, findings={"intracranial_haemorrhage"}))
    enhanced = _enhanced_like(classic)
    for data in (classic, enhanced):
        assert decode_grayscale(pydicom.dcmread(io.BytesIO(data))).min() < -500  # air in HU, not raw stored values
    np.testing.assert_array_equal(
        prepare_for_model(enhanced, size=128, windowing=DATASET_WINDOW),
        prepare_for_model(classic, size=128, windowing=DATASET_WINDOW),
    )


def test_each_frame_of_a_multi_frame_ct_reaches_the_model_as_its_classic_slice_does() -> None:
    """An enhanced (here legacy converted) CT holds the series in one object, rescale and window in its functional
    groups: each frame must be what the classic slice at its position gives."""
    findings = {"intracranial_haemorrhage"}
    multiframe = head_ct_multiframe(seed=4, findings=findings, slices=5, size=64)
    classic = {float(pydicom.dcmread(io.BytesIO(data)).ImagePositionPatient[2]): data
               for data in head_ct_series(seed=4, findings=findings, slices=5, size=64)}  # fmt: skip
    dataset = pydicom.dcmread(io.BytesIO(multiframe))
    frames, unreadable = prepare_slices(multiframe, size=32, windowing=BRAIN_WINDOW)
    assert frames.shape == (5, 32, 32) and dataset.NumberOfFrames == 5 and unreadable == {}
    for index, item in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        position = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        expected = prepare_for_model(classic[position], size=32, windowing=BRAIN_WINDOW)
        np.testing.assert_array_equal(frames[index], expected)


def test_each_frame_is_rescaled_by_its_own_functional_group() -> None:
    """Per-frame Pixel Value Transformation (PS3.3 C.7.6.16.2.9): frame 1's would misread the others."""
    many = pydicom.dcmread(io.BytesIO(_enhanced_like(to_dicom(head_ct_phantom(seed=2)), frames=3)))
    per_frame = []
    for intercept in (0, -1000, 500):
        rescale, item = Dataset(), Dataset()
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, intercept, "HU"
        item.PixelValueTransformationSequence = [rescale]
        per_frame.append(item)
    many.PerFrameFunctionalGroupsSequence = per_frame
    del many.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    first = decode_grayscale(many, frame=0)
    for frame, intercept in ((1, -1000), (2, 500)):
        np.testing.assert_array_equal(decode_grayscale(many, frame=frame), first + intercept)


def test_a_frame_that_cannot_be_read_costs_its_slice_and_too_many_frames_the_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qure_ray.dicom import pixels
    from qure_ray.dicom.synthetic import to_bytes
    from qure_ray.errors import InvalidInstanceError

    many = pydicom.dcmread(io.BytesIO(_enhanced_like(to_dicom(head_ct_phantom(seed=2)), frames=3)))
    per_frame = []
    for slope in ("1", "NaN", "1"):  # frame 2's rescale cannot be applied
        rescale, item = Dataset(), Dataset()
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = slope, "0", "HU"
        item.PixelValueTransformationSequence = [rescale]
        per_frame.append(item)
    many.PerFrameFunctionalGroupsSequence = per_frame
    del many.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    frames, unreadable = prepare_slices(to_bytes(many), size=32, windowing=BRAIN_WINDOW)
    assert list(unreadable) == [1] and unreadable[1].startswith("frame 2: ") and "NaN" in unreadable[1]
    assert frames[0].std() > 0 and frames[2].std() > 0 and not frames[1].any()
    monkeypatch.setattr(pixels, "MAX_SLICES", 2)
    with pytest.raises(InvalidInstanceError, match="3 frames; a series is read up to 2 slices"):
        prepare_slices(to_bytes(many), size=32, windowing=BRAIN_WINDOW)


def test_a_multi_frame_ct_that_codes_its_anatomy_is_routed_as_head_ct() -> None:
    """A legacy conversion (and many enhanced CTs) code the anatomy in the Frame Anatomy group, with no
    BodyPartExamined: routed by that code (PS3.16 Annex L), it reaches head CT, not `unsupported`."""
    from qure_ray.dicom.synthetic import to_bytes
    from qure_ray.records import UseCase
    from qure_ray.routing import InstanceFacts, Router, load_routing

    data = head_ct_multiframe(seed=6, findings=set(), slices=2, size=32)
    dataset = pydicom.dcmread(io.BytesIO(data))
    assert "BodyPartExamined" not in dataset
    metadata = read_instance(data).metadata
    router = Router(load_routing(), frozenset({UseCase.QXR, UseCase.QER}))
    assert metadata.body_part == "HEAD"
    assert router.route(InstanceFacts.of(metadata, source="s")).usecase is UseCase.QER
    dataset.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].AnatomicRegionSequence[0].CodeValue = "1234"
    assert read_instance(to_bytes(dataset)).metadata.body_part == ""  # a code outside Annex L: no body part


@pytest.mark.parametrize(
    ("where", "scheme", "value", "term"),
    [
        ("AnatomicRegionSequence", "SCT", "69536005", "HEAD"),
        ("AnatomicRegionSequence", "SRT", "T-D1100", "HEAD"),  # SNOMED RT, before DICOM moved to SCT
        ("PerFrameFunctionalGroupsSequence", "SCT", "12738006", "BRAIN"),
        ("SharedFunctionalGroupsSequence", "SCT", "816094009", "CHEST"),  # CHEST and THORAX share it: its meaning
        ("SharedFunctionalGroupsSequence", "99LOCAL", "69536005", ""),  # another scheme's code is not SNOMED's
    ],
)
def test_the_body_part_of_a_coded_anatomy(where: str, scheme: str, value: str, term: str) -> None:
    from qure_ray.dicom.standards import body_part_of_anatomy

    code = Dataset()
    code.CodingSchemeDesignator, code.CodeValue, code.CodeMeaning = scheme, value, "Chest"
    dataset = Dataset()
    if where == "AnatomicRegionSequence":
        dataset.AnatomicRegionSequence = [code]
    else:
        anatomy, group = Dataset(), Dataset()
        anatomy.AnatomicRegionSequence = [code]
        group.FrameAnatomySequence = [anatomy]
        setattr(dataset, where, [group])
    assert body_part_of_anatomy(dataset) == term


def test_the_ingress_loads_no_code_tables_until_an_object_needs_them() -> None:
    """pydicom's SR code tables and highdicom hold about 60k objects that every full collection of the ingress's
    garbage collector would scan: lookups measured about 10% slower with them loaded at import."""
    assert loaded_by_importing("qure_ray.api.app", ("pydicom.sr.coding", "highdicom")) == []
