"""All assets of one finished image, rendered in one go: what the `outputs` task stores."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydicom.dataset import Dataset

from qure_ray.models.card import ModelCard
from qure_ray.outputs.content import ReportContent
from qure_ray.outputs.dicom_objects import encapsulated_pdf, secondary_capture, structured_report
from qure_ray.outputs.documents import THUMBNAIL_PX, pdf_report, png
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


MEDIA_TYPES = {".dcm": "application/dicom", ".png": "image/png", ".pdf": "application/pdf"}


def render_assets(source: Dataset, result: ResultRecord, card: ModelCard, heatmaps: np.ndarray | None) -> list[Asset]:
    content = ReportContent.from_result(result, card, heatmaps)
    rgb = overlay(source, content)
    full_png = png(rgb)
    header = {
        "Accession": str(source.get("AccessionNumber", "")),
        "Study date": str(source.get("StudyDate", "")),
        "Modality": str(source.get("Modality", "")),
        "Body part": str(source.get("BodyPartExamined", "")),
        "SOP Instance UID": str(source.SOPInstanceUID),
    }
    pdf = pdf_report(study=header, content=content, overlay_png=full_png)
    assets = [
        Asset(AssetKind.SC, "sc.dcm", secondary_capture(source, rgb, content), MEDIA_TYPES[".dcm"]),
        Asset(AssetKind.SC_FULL_PNG, "sc_full.png", full_png, MEDIA_TYPES[".png"]),
        Asset(AssetKind.SC_THUMBNAIL, "sc_thumbnail.png", png(rgb, max_side=THUMBNAIL_PX), MEDIA_TYPES[".png"]),
        Asset(AssetKind.REPORT_PDF, "report.pdf", pdf, MEDIA_TYPES[".pdf"]),
        Asset(AssetKind.REPORT_DCM, "report_pdf.dcm", encapsulated_pdf(source, pdf, content), MEDIA_TYPES[".dcm"]),
    ]
    if content.unusable_reason is None:  # an SR of findings only when there are findings
        assets.append(
            Asset(AssetKind.REPORT_SR, "report_sr.dcm", structured_report(source, content), MEDIA_TYPES[".dcm"])
        )
    return assets
