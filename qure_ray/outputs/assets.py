"""All assets of one finished image, rendered in one go: what the `outputs` task stores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset

from qure_ray.dicom.standards import body_part
from qure_ray.media_types import MEDIA_TYPES
from qure_ray.models.card import ModelCard
from qure_ray.outputs.content import ReportContent
from qure_ray.outputs.dicom_objects import (
    OutputUids,
    as_output_source,
    encapsulated_pdf,
    secondary_capture,
    structured_report,
)
from qure_ray.outputs.documents import THUMBNAIL_PX, pdf_report, png, readable_date, readable_name, readable_sex
from qure_ray.outputs.overlay import overlay
from qure_ray.records import ResultRecord


class AssetKind(StrEnum):
    """The `result.files` keys of the Qure results API."""

    SC = "sc"
    SC_FULL_PNG = "sc_full_png"
    SC_THUMBNAIL = "sc_thumbnail"
    REPORT_PDF = "report_pdf"
    REPORT_DCM = "report_dcm"
    REPORT_SR = "report_sr"


@dataclass(frozen=True)
class Asset:
    kind: AssetKind
    name: str
    data: bytes
    media_type: str


_FILES = {
    AssetKind.SC: ("sc", ".dcm"), AssetKind.SC_FULL_PNG: ("sc_full", ".png"),
    AssetKind.SC_THUMBNAIL: ("sc_thumbnail", ".png"), AssetKind.REPORT_PDF: ("report", ".pdf"),
    AssetKind.REPORT_DCM: ("report_pdf", ".dcm"), AssetKind.REPORT_SR: ("report_sr", ".dcm"),
}  # fmt: skip


def asset_name(kind: AssetKind, index: int = 0) -> str:
    """The file name of an asset under `assets/<source>/<uid>/`; the images after a series' first key slice
    get `_2`, `_3`, ... (a single image's assets keep the plain names)."""
    stem, extension = _FILES[kind]
    return f"{stem}_{index + 1}{extension}" if index else f"{stem}{extension}"


def _asset(kind: AssetKind, data: bytes, index: int = 0) -> Asset:
    return Asset(kind, asset_name(kind, index), data, MEDIA_TYPES[_FILES[kind][1]])


class KeyImage(NamedTuple):
    """An image a result's assets show: the original, the model's heatmaps (labels, h, w) for it, and the frame
    read (from 1) when the original is a multi-frame object (an enhanced CT's slice)."""

    dataset: Dataset
    heatmaps: np.ndarray | None = None
    frame: int | None = None


def render_assets(images: Sequence[KeyImage], result: ResultRecord, card: ModelCard) -> list[Asset]:
    """Every asset of a result. `images`: the source image, or for a series result its key slices, each with its
    own heatmaps; each image gets an SC and PNGs, the result one SR and one PDF report (also as Encapsulated
    PDF), made from the first image's study."""
    if not images:
        raise ValueError("a result's assets need at least one source image")
    assets: list[Asset] = []
    overlays: list[np.ndarray] = []
    images = [image._replace(dataset=as_output_source(image.dataset)) for image in images]
    sources = [image.dataset for image in images]
    frames = [image.frame for image in images]
    report = ReportContent.from_result(result, card, None)  # the result's, for the PDF, its DICOM and the SR
    uids = OutputUids.of(sources, report, frames)
    for index, (dataset, heatmaps, frame) in enumerate(images):
        content = ReportContent.from_result(result, card, heatmaps)
        rgb = overlay(dataset, content, frame)
        overlays.append(rgb)
        sc = secondary_capture(dataset, rgb, content, uids=uids, index=index, frame=frame)
        assets += [
            _asset(AssetKind.SC, sc, index),
            _asset(AssetKind.SC_FULL_PNG, png(rgb), index),
            _asset(AssetKind.SC_THUMBNAIL, png(rgb, max_side=THUMBNAIL_PX), index),
        ]
    pdf = pdf_report(study=_report_header(images, result), content=report, overlay=overlays[0])
    encapsulated = encapsulated_pdf(sources, pdf, report, uids=uids)
    assets += [_asset(AssetKind.REPORT_PDF, pdf), _asset(AssetKind.REPORT_DCM, encapsulated)]
    if report.unusable_reason is None:  # an SR of findings only when there are findings
        assets.append(_asset(AssetKind.REPORT_SR, structured_report(sources, report, uids=uids, frames=frames)))
    return assets


def _report_header(images: list[KeyImage], result: ResultRecord) -> dict[str, str]:
    """What the PDF report's header shows: the patient, the study, and the image or the series and its key
    slices. A report read away from the PACS (a partner's download) must say whose it is."""
    first = images[0].dataset
    header = {
        "Patient name": readable_name(first.get("PatientName")),
        "Patient ID": str(first.get("PatientID", "")),
        "Birth date": readable_date(first.get("PatientBirthDate")),
        "Sex": readable_sex(first.get("PatientSex")),
        "Accession": str(first.get("AccessionNumber", "")),
        "Study date": readable_date(first.get("StudyDate")),
        "Modality": str(first.get("Modality", "")),
        "Body part": body_part(first),
    }
    if result.usecase.per_series:
        header["Series Instance UID"] = str(first.SeriesInstanceUID)
        header["Slices read"] = str(len(result.slices))
        header["Key slices (instance number)"] = ", ".join(_slice_label(image) for image in images)
    else:
        header["SOP Instance UID"] = str(first.SOPInstanceUID)
    return header


def _slice_label(image: KeyImage) -> str:
    number = str(image.dataset.get("InstanceNumber", "?"))
    return number if image.frame is None else f"{number} frame {image.frame}"
