"""Synthetic phantoms whose findings have visual signatures: training, test and benchmark data in code.

Chest radiographs (`chest_phantom`, 12-bit, bright = dense): body, two lung fields cut below by the
hemidiaphragm domes (so each has a sharp costophrenic angle), vessel markings fanning out from the hila,
ribs, heart and mediastinum, noise; size, position, contrast and heart size vary with the seed. Findings,
each drawn the way it looks on a frontal film:

    nodule            a small round soft-edged opacity inside a lung
    consolidation     a patchy, fluffy opacity confined to a lung
    pleural_effusion  fluid at a lung base with a meniscus rising laterally, blunting the costophrenic angle
    cardiomegaly      the heart widened (cardiothoracic ratio > 0.5; normal hearts stay below 0.4)
    pneumothorax      the lung edge pulled in from the apex and side: a thin visceral pleural line with a
                      darker, vessel-free rim outside it

Head CT slices (`head_ct_phantom`, Hounsfield units, written with the brain window 40/80): skull, grey
and white matter, lateral ventricles on the middle slices, falx; the head's position and tilt vary.
Findings:

    intracranial_haemorrhage  a bright (60-80 HU) intraparenchymal clot with a dark oedema rim, or a
                              subdural crescent along the inner table
    midline_shift             the falx bowed sideways (anchored front and back) and the ventricles pushed
                              across, the one on the mass side compressed

Every random number is drawn before any finding is drawn and whatever the findings, so the same seed is
the same patient with and without each finding. `head_ct_series` stacks slices of one head into a series
whose middle slices carry the findings (`series_slice_findings` says which). `to_dicom` writes a phantom
as DICOM Part 10 bytes, the form in which partners send images.

"Performance": a 256 px chest phantom takes about 10 ms, a head slice about 5 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from io import BytesIO

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from qure_ray.dicom.part10 import new_dataset, to_bytes
from qure_ray.dicom.synthetic import CT_IMAGE, DX_FOR_PRESENTATION

CHEST_FINDINGS = ("nodule", "consolidation", "pleural_effusion", "cardiomegaly", "pneumothorax")
HEAD_CT_FINDINGS = ("intracranial_haemorrhage", "midline_shift")

HEAD_SERIES_POSITIONS = (0.15, 0.85)
"""The `slice_position` range a head series covers, skull base to vertex (where the head is still wide)."""
HEAD_SERIES_SPACING_MM = 5.0

Floats = NDArray[np.float32]


class PhantomKind(StrEnum):
    CHEST = "chest"
    HEAD_CT = "head_ct"

    @property
    def findings(self) -> tuple[str, ...]:
        return CHEST_FINDINGS if self is PhantomKind.CHEST else HEAD_CT_FINDINGS


@dataclass(frozen=True)
class Phantom:
    pixels: NDArray[np.int16] | NDArray[np.uint16]
    findings: frozenset[str]
    kind: PhantomKind
    meta: dict[str, str] = field(default_factory=dict)


def _known(findings: frozenset[str] | set[str], kind: PhantomKind) -> frozenset[str]:
    unknown = set(findings) - set(kind.findings)
    if unknown:
        what = "chest" if kind is PhantomKind.CHEST else "head CT"
        raise ValueError(f"unknown {what} findings {sorted(unknown)}; known: {kind.findings}")
    return frozenset(findings)


def _grid(size: int) -> tuple[Floats, Floats]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    return y, x


def _ellipse(y: Floats, x: Floats, cy: float, cx: float, ry: float, rx: float) -> NDArray[np.bool_]:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _soft_disc(y: Floats, x: Floats, cy: float, cx: float, radius: float) -> Floats:
    """1 inside, falling to 0 over the outer 30 % of the radius."""
    distance = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    return np.clip((radius - distance) / (0.3 * radius), 0.0, 1.0).astype(np.float32)


def _blur(image: Floats, passes: int = 2) -> Floats:
    for _ in range(passes):
        neighbours = np.roll(image, 1, 0) + np.roll(image, -1, 0) + np.roll(image, 1, 1) + np.roll(image, -1, 1)
        image = ((image + neighbours) / 5).astype(np.float32)
    return image


# --- chest radiographs -------------------------------------------------------------------------------


def chest_phantom(*, seed: int, findings: frozenset[str] | set[str] = frozenset(), size: int = 256) -> Phantom:
    """A frontal chest radiograph (12-bit, MONOCHROME2: bright = dense) with the given findings."""
    findings = _known(findings, PhantomKind.CHEST)
    rng = np.random.default_rng(seed)
    shift_x, shift_y = rng.uniform(-0.04, 0.04, 2)
    scale, contrast = rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.15)
    heart_rx, enlarged_heart_rx = rng.uniform(0.09, 0.115), rng.uniform(0.15, 0.19)
    vessel_phase = rng.uniform(0, 2 * np.pi, 2)
    sides = rng.choice([-1, 1], 4)
    side = dict(zip(("nodule", "consolidation", "pleural_effusion", "pneumothorax"), sides, strict=True))
    nodule = rng.uniform([-0.55, -0.6, 0.016, 0.2], [0.55, 0.35, 0.03, 0.34])  # x, y (lung units), radius, density
    patch = rng.uniform([-0.3, -0.5, 0.35, 0.22], [0.3, 0.25, 0.5, 0.32])  # x, y, extent, density
    texture = rng.uniform(0.2, 1.0, (size // 8, size // 8)).astype(np.float32)
    effusion_level, meniscus_rise = rng.uniform(0.25, 0.55), rng.uniform(0.25, 0.45)
    collapse = rng.uniform(0.6, 0.82)
    noise = rng.normal(0, 35, (size, size)).astype(np.float32)

    y, x = _grid(size)
    x, y = x - np.float32(shift_x), y - np.float32(shift_y)
    body = _ellipse(y, x, 0.55, 0.5, 0.5 * scale, 0.42 * scale)
    lungs = {s: _Lung.of(y, x, side=s, scale=scale, vessel_phase=vessel_phase[i]) for i, s in enumerate((-1, 1))}
    lung_mask = lungs[-1].mask | lungs[1].mask
    arcs = y - 0.32 * (x - 0.5) ** 2 - 0.22  # ribs: faint arcs across the lungs, 0.055 apart
    ribs = ((arcs + 0.008) % 0.055 < 0.016) & (arcs > -0.008) & (arcs < 0.4) & lung_mask
    density = 0.5 * body - 0.35 * lung_mask + 0.07 * ribs + 0.05 * (lungs[-1].vessels + lungs[1].vessels)
    density += 0.3 * (body & (np.where(x < 0.5, lungs[-1].dome, lungs[1].dome) < y))  # diaphragm, abdomen
    rx = (enlarged_heart_rx if "cardiomegaly" in findings else heart_rx) * scale
    density += 0.3 * _ellipse(y, x, 0.585, 0.52, 0.1 * scale, rx)  # heart
    density += 0.15 * (_ellipse(y, x, 0.35, 0.5, 0.22 * scale, 0.055 * scale) & ~lung_mask)  # mediastinum

    if "nodule" in findings:
        lung = lungs[side["nodule"]]
        density += nodule[3] * _soft_disc(y, x, lung.cy + nodule[1] * lung.ry, lung.cx + nodule[0] * lung.rx, nodule[2])
    if "consolidation" in findings:
        lung = lungs[side["consolidation"]]
        cy, cx = lung.cy + patch[1] * lung.ry, lung.cx + patch[0] * lung.rx
        region = _ellipse(y, x, cy, cx, patch[2] * lung.ry, 1.4 * patch[2] * lung.rx) & lung.mask
        blotches = np.kron(texture, np.ones((8, 8), np.float32))[:size, :size]
        density += patch[3] * _blur(_blur(blotches, 6) * region, 2)
    if "pleural_effusion" in findings:
        lung = lungs[side["pleural_effusion"]]
        density += 0.35 * lung.fluid(y, x, level=effusion_level, rise=meniscus_rise)
    if "pneumothorax" in findings:
        lung = lungs[side["pneumothorax"]]
        rim, pleural_line = lung.pneumothorax(y, x, collapse=collapse)
        density -= rim * (0.05 * lung.vessels + 0.07)
        density += 0.1 * pleural_line
    image = _blur(density, 1) * np.float32(3000 * contrast) + 700 + noise
    return Phantom(np.clip(image, 0, 4095).astype(np.uint16), findings, PhantomKind.CHEST)


@dataclass(frozen=True)
class _Lung:
    """One lung field: an ellipse cut below by its hemidiaphragm dome (`side` -1: image left)."""

    side: int
    cy: float
    cx: float
    ry: float
    rx: float
    dome: Floats
    """The dome's height at each column: the lung ends where y passes it."""
    mask: NDArray[np.bool_]
    vessels: Floats
    """Vessel markings: stripes fanning out from the hilum, fading towards the periphery."""

    @classmethod
    def of(cls, y: Floats, x: Floats, *, side: int, scale: float, vessel_phase: float) -> _Lung:
        cy, cx, ry, rx = 0.5, 0.5 + side * 0.17 * scale, 0.32 * scale, 0.13 * scale
        across, down = ((x - cx) / rx) ** 2, ((y - cy) / ry) ** 2
        dome = (cy + ry * (0.5 + 0.3 * across)).astype(np.float32)
        # rounded above, squarer below, so the dome meets the chest wall in a sharp costophrenic angle
        mask = (across + np.where(y < cy, down, down * down * down) <= 1) & (y < dome)
        hy, hx = cy + 0.1 * ry, cx - side * 0.55 * rx
        stripes = np.maximum(np.cos(9 * np.arctan2(y - hy, (x - hx) * side) + vessel_phase), 0)
        stripes = stripes * stripes * stripes
        fade = np.exp(-np.sqrt((y - hy) ** 2 + (x - hx) ** 2) / 0.2)
        return cls(side, cy, cx, ry, rx, dome, mask, (stripes * stripes * fade * mask).astype(np.float32))

    def fluid(self, y: Floats, x: Floats, *, level: float, rise: float) -> Floats:
        """Pleural fluid: from the base up to a meniscus that climbs towards the chest wall, thin at its top."""
        lateral = np.clip((x - self.cx) * self.side / self.rx, 0.0, 1.0)
        meniscus = self.cy + self.ry * (level - rise * lateral**2)
        return (np.clip((y - meniscus) / 0.035, 0.0, 1.0) * self.mask).astype(np.float32)

    def pneumothorax(self, y: Floats, x: Floats, *, collapse: float) -> tuple[Floats, Floats]:
        """The air rim between chest wall and collapsed lung, and the visceral pleural line bounding it."""
        cy = self.cy + (1 - collapse) * self.ry * 0.7  # the lung falls away from the apex...
        cx = self.cx - self.side * (1 - collapse) * self.rx * 0.6  # ...and from the chest wall
        ry, rx = self.ry * (collapse + 0.3 * (1 - collapse)), self.rx * collapse
        radius = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        rim = (self.mask & (radius > 1)).astype(np.float32)
        line = (self.mask & (np.abs(radius - 1) < 0.03)).astype(np.float32)
        return rim, line


# --- head CT -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    """One patient's head: everything random about it, drawn once so a series is one head."""

    cy: float
    cx: float
    ry: float
    rx: float
    tilt_rad: float
    skull: float
    brain_hu: float
    ventricles: float
    shift: float
    subdural: bool
    bleed: NDArray[np.float64]  # angle, depth (brain units), radius, aspect, HU

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Head:
        cy, cx = rng.uniform(0.47, 0.53, 2)
        ry, rx, tilt = rng.uniform(0.4, 0.44), rng.uniform(0.32, 0.36), rng.uniform(-0.09, 0.09)
        skull, brain_hu, ventricles = rng.uniform(0.018, 0.028), rng.uniform(30, 38), rng.uniform(0.8, 1.2)
        shift = rng.uniform(0.03, 0.06) * rng.choice([-1, 1])
        subdural = bool(rng.random() < 0.4)
        bleed = rng.uniform([0, 0.2, 0.035, 0.7, 60], [2 * np.pi, 0.6, 0.06, 1.0, 80])
        return cls(cy, cx, ry, rx, tilt, skull, brain_hu, ventricles, shift, subdural, bleed)

    def slice(
        self, findings: frozenset[str], *, size: int, position: float, bleed_scale: float, noise: Floats
    ) -> Phantom:
        """One axial slice at `position` (0 skull base, 1 vertex); `bleed_scale` sizes the haemorrhage."""
        y, x = _grid(size)
        cos, sin = math.cos(self.tilt_rad), math.sin(self.tilt_rad)
        u = (x - self.cx) * cos + (y - self.cy) * sin  # head coordinates: u left-right, v front-back
        v = (y - self.cy) * cos - (x - self.cx) * sin
        extent = math.sqrt(max(0.05, 1 - (2 * position - 1) ** 2))
        ry, rx = self.ry * extent, self.rx * extent
        bry, brx = ry - self.skull, rx - self.skull
        hu = np.full((size, size), -1000.0, np.float32)  # air
        brain = _ellipse(v, u, 0, 0, bry, brx)
        hu[_ellipse(v, u, 0, 0, ry, rx)] = 1000  # skull
        hu[brain] = self.brain_hu
        hu[_ellipse(v, u, 0, 0, 0.8 * bry, 0.8 * brx) & brain] -= 7  # white matter under the cortex
        shift = self.shift if "midline_shift" in findings else 0.0
        bow = shift * np.clip(1 - (v / (0.9 * bry)) ** 2, 0, 1)  # the falx is held front and back
        span = np.clip(1 - ((position - 0.5) / 0.2) ** 2, 0, 1) * self.ventricles  # ventricles on middle slices
        if span > 0:
            for side in (-1, 1):
                squeeze = 0.5 if shift and side == -np.sign(shift) else 1.0  # the mass side is compressed
                horns = _ellipse(v, u, -0.03, shift + side * 0.05 * extent, 0.1 * extent * span, 0.028 * squeeze)
                hu[horns & brain] = 5
        hu[(np.abs(u - bow) < 0.005) & (np.abs(v) < 0.9 * bry) & brain] = 60  # falx
        if "intracranial_haemorrhage" in findings and bleed_scale > 0:
            hu += self._bleed(v, u, brain, bry, brx, bleed_scale)
        return Phantom(np.clip(hu + noise, -1024, 3071).astype(np.int16), findings, PhantomKind.HEAD_CT)

    def _bleed(self, v: Floats, u: Floats, brain: NDArray[np.bool_], bry: float, brx: float, scale: float) -> Floats:
        angle, depth, radius, aspect, blood_hu = self.bleed
        add = np.zeros_like(u)
        if self.subdural:  # a crescent between the inner table and the brain surface
            thick = (0.012 + 0.25 * radius) * scale
            side = 1 if math.cos(angle) > 0 else -1
            pushed = _ellipse(v, u, 0.0, -side * thick, bry, brx)
            crescent = brain & ~pushed & (np.abs(v - 0.3 * bry * math.sin(angle)) < 0.6 * bry) & (u * side > 0)
            add[crescent] = blood_hu - self.brain_hu
            return add
        cv, cu = depth * bry * math.sin(angle), depth * brx * math.cos(angle)
        clot = _soft_disc(v / aspect, u, cv / aspect, cu, radius * scale)
        oedema = _soft_disc(v / aspect, u, cv / aspect, cu, radius * scale + 0.012) - clot
        return ((blood_hu - self.brain_hu) * clot - 8 * oedema) * brain


def head_ct_phantom(
    *, seed: int, findings: frozenset[str] | set[str] = frozenset(), size: int = 256, slice_position: float = 0.5
) -> Phantom:
    """One axial head CT slice in HU (int16): skull, brain, ventricles; `slice_position` in [0, 1]."""
    findings = _known(findings, PhantomKind.HEAD_CT)
    rng = np.random.default_rng(seed)
    head = _Head.draw(rng)
    bleed_scale = math.sqrt(1 - rng.uniform(0, 0.85) ** 2)  # cut anywhere through the clot, not only its middle
    noise = rng.normal(0, 4, (size, size)).astype(np.float32)
    return head.slice(findings, size=size, position=slice_position, bleed_scale=bleed_scale, noise=noise)


def series_slice_findings(findings: frozenset[str] | set[str], *, slices: int) -> list[frozenset[str]]:
    """Which findings each slice of a `head_ct_series` shows: a haemorrhage on the middle quarter of the
    slices (at least one), a midline shift on the middle half, nothing on the others."""
    findings = _known(findings, PhantomKind.HEAD_CT)
    if slices < 1:
        raise ValueError(f"a series has at least one slice, got slices={slices}")

    def middle(count: int) -> range:
        start = (slices - count) // 2
        return range(start, start + count)

    spans = {
        "intracranial_haemorrhage": middle(max(1, math.ceil(slices / 4))),
        "midline_shift": middle(max(1, math.ceil(slices / 2))),
    }
    return [frozenset(f for f in findings if index in spans[f]) for index in range(slices)]


def head_ct_series(*, seed: int, findings: frozenset[str] | set[str], slices: int = 12, size: int = 256) -> list[bytes]:
    """One axial head CT series of one head, as DICOM Part 10 bytes per slice (InstanceNumber 1..N).

    The slices share Study, Series and Frame of Reference UIDs and step 5 mm (SliceLocation and
    ImagePositionPatient); they span `HEAD_SERIES_POSITIONS`. The findings show only on the middle
    slices (`series_slice_findings`); the same seed without findings gives the same pixels elsewhere.
    """
    per_slice = series_slice_findings(findings, slices=slices)
    rng = np.random.default_rng(seed)
    head = _Head.draw(rng)
    bleeding = [i for i, shown in enumerate(per_slice) if "intracranial_haemorrhage" in shown]
    centre = (bleeding[0] + bleeding[-1]) / 2 if bleeding else 0.0
    half_span = (len(bleeding) + 1) / 2
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    low, high = HEAD_SERIES_POSITIONS
    instances = []
    for index, shown in enumerate(per_slice):
        position = low + (high - low) * (index / (slices - 1) if slices > 1 else 0.5)
        bleed_scale = math.sqrt(max(0.0, 1 - ((index - centre) / half_span) ** 2))
        noise = rng.normal(0, 4, (size, size)).astype(np.float32)
        phantom = head.slice(shown, size=size, position=position, bleed_scale=bleed_scale, noise=noise)
        instances.append(
            to_dicom(
                phantom,
                study_uid=study_uid,
                series_uid=series_uid,
                frame_of_reference_uid=frame_uid,
                instance_number=index + 1,
                slice_location_mm=index * HEAD_SERIES_SPACING_MM,
            )
        )
    return instances


def head_ct_multiframe(*, seed: int, findings: frozenset[str] | set[str], slices: int = 12, size: int = 256) -> bytes:
    """The series of `head_ct_series` as one multi-frame object, a frame per slice: Legacy Converted Enhanced CT
    (what a PACS converts a classic series to; an enhanced CT from a scanner is read the same way), with rescale
    and window in its functional groups, and its anatomy coded there (Head, SCT 69536005) in place of
    BodyPartExamined, as the conversion leaves it."""
    import highdicom as hd  # here: the timing module (GPU machines without the platform's packages) imports this one

    classic = [pydicom.dcmread(BytesIO(data)) for data in head_ct_series(seed=seed, findings=findings, slices=slices,
                                                                           size=size)]  # fmt: skip
    multiframe = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=classic,
        series_instance_uid=generate_uid(),
        series_number=1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    return to_bytes(multiframe)


# --- DICOM -------------------------------------------------------------------------------------------


def to_dicom(
    phantom: Phantom,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    slice_location_mm: float = 0.0,
    frame_of_reference_uid: str | None = None,
    sop_uid: str | None = None,
) -> bytes:
    """The phantom as a DX (chest) or CT (head) instance, Part 10 bytes; no real patient data."""
    chest = phantom.kind == PhantomKind.CHEST
    ds = new_dataset(DX_FOR_PRESENTATION if chest else CT_IMAGE, sop_uid or generate_uid())
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
        ds.FrameOfReferenceUID = frame_of_reference_uid or generate_uid()
    ds.PixelData = phantom.pixels.astype("<i2" if not chest else "<u2").tobytes()
    return to_bytes(ds)
