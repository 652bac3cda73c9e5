"""Synthetic DICOM instances for tests, demos and benchmarks (no patient data anywhere).

`chest_dx()` writes a valid DX (For Presentation) Part 10 file of a crude chest radiograph: lung fields,
mediastinum and noise. Images are deterministic for a given seed; UIDs are fresh unless given.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from qure_ray.dicom.part10 import new_dataset, to_bytes

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def chest_image(*, size: int, seed: int) -> np.ndarray:
    """A 12-bit chest-like image: dark lungs in a brighter body, a bright mediastinum, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = np.exp(-(((x - 0.5) / 0.45) ** 8 + ((y - 0.55) / 0.5) ** 8))
    lungs = sum(np.exp(-(((x - cx) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2) * 2) for cx in (0.3, 0.7))
    mediastinum = np.exp(-(((x - 0.5) / 0.08) ** 2 + ((y - 0.55) / 0.4) ** 4))
    image = 1200 * body - 700 * lungs + 900 * mediastinum + rng.normal(0, 40, (size, size))
    return np.clip(image + 600, 0, 4095).astype(np.uint16)


def chest_dx(
    *,
    size: int = 256,
    seed: int = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    modality: str = "DX",
    body_part: str = "CHEST",
    view_position: str = "PA",
    patient_name: str = "Phantom^Chest",
    patient_id: str = "PHANTOM-0001",
) -> bytes:
    """A chest DX instance as DICOM Part 10 bytes."""
    pixels = chest_image(size=size, seed=seed)
    ds = _image_dataset(
        sop_class=DX_FOR_PRESENTATION,
        modality=modality,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        patient_name=patient_name,
        patient_id=patient_id,
    )
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.WindowCenter = 1000
    ds.WindowWidth = 2000
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    _set_pixels(ds, pixels, bits_stored=12)
    return to_bytes(ds)


def _image_dataset(
    *,
    sop_class: str,
    modality: str,
    study_uid: str | None,
    series_uid: str | None,
    sop_uid: str | None,
    patient_name: str,
    patient_id: str,
) -> Dataset:
    ds = new_dataset(sop_class, sop_uid or generate_uid())
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "qure_ray synthetic"
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, *, bits_stored: int) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
