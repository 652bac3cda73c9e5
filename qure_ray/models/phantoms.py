"""Synthetic phantoms whose findings have visual signatures: training, test and benchmark data in code.

Chest radiographs (`chest_phantom`): body outline, two lung fields, heart and mediastinum, ribs, a
diaphragm, noise; size, contrast and position vary with the seed. Findings, each drawn the way it looks:

    nodule            a small round opacity inside a lung
    consolidation     a large, patchy, fluffy opacity inside a lung
    pleural_effusion  the costophrenic angle filled: a dense band rising at a lung base
    cardiomegaly      the heart widened (cardiothoracic ratio > 0.5)
    pneumothorax      a lung edge pulled in, with a dark, vessel-free rim outside it

Head CT slices (`head_ct_phantom`, Hounsfield units): skull, brain, ventricles; findings
`intracranial_haemorrhage` (a bright extra-axial or intraparenchymal blob) and `midline_shift` (the
ventricles and falx displaced sideways). `to_dicom` writes either as DICOM Part 10 bytes, the form in
which partners send images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from qure_ray.dicom.part10 import new_dataset, to_bytes
from qure_ray.dicom.synthetic import CT_IMAGE, DX_FOR_PRESENTATION

CHEST_FINDINGS = ("nodule", "consolidation", "pleural_effusion", "cardiomegaly", "pneumothorax")
HEAD_CT_FINDINGS = ("intracranial_haemorrhage", "midline_shift")


@dataclass(frozen=True)
class Phantom:
    pixels: NDArray[np.int16] | NDArray[np.uint16]
    findings: frozenset[str]
    kind: str  # "chest" or "head_ct"
    meta: dict[str, str] = field(default_factory=dict)


def _ellipse(
    y: NDArray[np.float32], x: NDArray[np.float32], cy: float, cx: float, ry: float, rx: float
) -> NDArray[np.bool_]:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _blur(image: NDArray[np.float32], passes: int = 2) -> NDArray[np.float32]:
    for _ in range(passes):
        neighbours = np.roll(image, 1, 0) + np.roll(image, -1, 0) + np.roll(image, 1, 1) + np.roll(image, -1, 1)
        image = ((image + neighbours) / 5).astype(np.float32)
    return image


def chest_phantom(*, seed: int, findings: frozenset[str] | set[str] = frozenset(), size: int = 256) -> Phantom:
    """A frontal chest radiograph (12-bit, MONOCHROME2: bright = dense) with the given findings."""
    unknown = set(findings) - set(CHEST_FINDINGS)
    if unknown:
        raise ValueError(f"unknown chest findings {sorted(unknown)}; known: {CHEST_FINDINGS}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shift_x, shift_y = rng.uniform(-0.04, 0.04, 2)
    x, y = x - shift_x, y - shift_y
    scale = rng.uniform(0.9, 1.1)
    density = np.zeros((size, size), np.float32)
    density += 0.55 * _ellipse(y, x, 0.55, 0.5, 0.5 * scale, 0.42 * scale)  # body
    lungs = {side: (0.47, 0.5 + side * 0.17 * scale, 0.3 * scale, 0.13 * scale) for side in (-1, 1)}
    lung_mask = np.zeros((size, size), bool)
    for cy, cx, ry, rx in lungs.values():
        lung_mask |= _ellipse(y, x, cy, cx, ry, rx)
    density -= 0.35 * lung_mask
    for rib in range(8):  # ribs: faint arcs across the lungs
        ry = 0.22 + rib * 0.055
        density += 0.07 * lung_mask * (np.abs(y - ry - 0.08 * (x - 0.5) ** 2 * 4) < 0.008)
    heart_rx = (0.17 if "cardiomegaly" in findings else 0.105) * scale
    density += 0.4 * _ellipse(y, x, 0.6, 0.52, 0.12 * scale, heart_rx)  # heart
    density += 0.35 * _ellipse(y, x, 0.35, 0.5, 0.22 * scale, 0.045 * scale)  # mediastinum
    density += 0.45 * (y > 0.8 + 0.05 * np.cos((x - 0.5) * 6))  # diaphragm / abdomen
    side = int(rng.choice([-1, 1]))
    cy, cx, ry, rx = lungs[side]
    if "nodule" in findings:
        ny, nx = cy + rng.uniform(-0.15, 0.1) * ry / 0.3, cx + rng.uniform(-0.4, 0.4) * rx
        density += 0.35 * _ellipse(y, x, ny, nx, 0.025, 0.025)
    if "consolidation" in findings:
        patch = _ellipse(y, x, cy + 0.05, cx, ry * 0.45, rx * 0.7) * rng.uniform(0.5, 1.0, (size, size))
        density += 0.3 * _blur(patch.astype(np.float32), 4)
    if "pleural_effusion" in findings:
        level = cy + ry * rng.uniform(0.35, 0.6)
        density += 0.35 * (_ellipse(y, x, cy, cx, ry, rx) & (y > level - 0.04 * (x - cx) * side * 4))
    if "pneumothorax" in findings:
        outer = _ellipse(y, x, cy, cx, ry, rx)
        collapsed = _ellipse(y, x, cy + 0.02, cx - side * 0.03, ry * 0.8, rx * 0.6)
        rim = outer & ~collapsed
        density[rim] = density[rim] * 0.3 - 0.1  # dark, no lung markings
        density += 0.12 * (
            np.abs(((y - cy - 0.02) / (ry * 0.8)) ** 2 + ((x - cx + side * 0.03) / (rx * 0.6)) ** 2 - 1) < 0.04
        )
    contrast = rng.uniform(0.85, 1.15)
    image = _blur(density, 1) * 3000 * contrast + 700 + rng.normal(0, 35, (size, size))
    return Phantom(np.clip(image, 0, 4095).astype(np.uint16), frozenset(findings), "chest")


def head_ct_phantom(
    *, seed: int, findings: frozenset[str] | set[str] = frozenset(), size: int = 256, slice_position: float = 0.5
) -> Phantom:
    """One axial head CT slice in HU (int16): skull, brain, ventricles; `slice_position` in [0, 1]."""
    unknown = set(findings) - set(HEAD_CT_FINDINGS)
    if unknown:
        raise ValueError(f"unknown head CT findings {sorted(unknown)}; known: {HEAD_CT_FINDINGS}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    extent = float(np.sqrt(max(0.05, 1 - (2 * slice_position - 1) ** 2)))
    ry, rx = 0.42 * extent, 0.34 * extent
    hu = np.full((size, size), -1000.0, np.float32)  # air
    head = _ellipse(y, x, 0.5, 0.5, ry, rx)
    brain = _ellipse(y, x, 0.5, 0.5, ry - 0.03, rx - 0.03)
    hu[head] = 1000  # skull
    hu[brain] = 35 + rng.normal(0, 3, int(brain.sum()))  # brain parenchyma
    shift = rng.uniform(0.03, 0.06) * int(rng.choice([-1, 1])) if "midline_shift" in findings else 0.0
    for side in (-1, 1):  # lateral ventricles (CSF)
        hu[_ellipse(y, x, 0.47, 0.5 + shift + side * 0.05, 0.09 * extent, 0.03 * extent) & brain] = 5
    hu[(np.abs(x - 0.5 - shift) < 0.004) & brain] = 55  # falx
    if "intracranial_haemorrhage" in findings:
        hy, hx = 0.5 + rng.uniform(-0.2, 0.2) * ry / 0.42, 0.5 + rng.uniform(-0.2, 0.2) * rx / 0.34
        hu[_ellipse(y, x, hy, hx, 0.05, 0.04) & brain] = 70 + rng.normal(0, 4)
    hu += rng.normal(0, 4, (size, size))
    return Phantom(np.clip(hu, -1024, 3071).astype(np.int16), frozenset(findings), "head_ct")


def to_dicom(
    phantom: Phantom,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    slice_location_mm: float = 0.0,
) -> bytes:
    """The phantom as a DX (chest) or CT (head) instance, Part 10 bytes; no real patient data."""
    chest = phantom.kind == "chest"
    ds = new_dataset(DX_FOR_PRESENTATION if chest else CT_IMAGE, generate_uid())
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "DX" if chest else "CT"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Synthetic", "PHANTOM", "", "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, instance_number
    ds.Manufacturer = "qure_ray phantoms"
    ds.BodyPartExamined = "CHEST" if chest else "HEAD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = phantom.pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12 if chest else 16, 11 if chest else 15
    if chest:
        ds.ViewPosition, ds.PatientOrientation, ds.ImageType = "PA", ["L", "F"], ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType, ds.PixelRepresentation = "FOR PRESENTATION", 0
        ds.WindowCenter, ds.WindowWidth = 2000, 3600
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope = 1, 0, 1
        ds.WindowCenter, ds.WindowWidth = 40, 80
        ds.SliceThickness, ds.SliceLocation = 5, slice_location_mm
        ds.ImagePositionPatient = [0, 0, slice_location_mm]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.9, 0.9]
        ds.FrameOfReferenceUID = generate_uid()
    ds.PixelData = phantom.pixels.astype("<i2" if not chest else "<u2").tobytes()
    return to_bytes(ds)
