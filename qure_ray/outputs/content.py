"""`ReportContent`: what every output document shows, built once from a result and its model card."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qure_ray.dicom.pixels import DATASET_WINDOW, Windowing
from qure_ray.models.card import ModelCard
from qure_ray.records import InstanceState, ModelInfo, ResultRecord, TriageStatus, UseCase


@dataclass(frozen=True)
class LabelFinding:
    name: str
    display: str
    score: float
    threshold: float
    positive: bool


@dataclass(frozen=True)
class ReportContent:
    findings: tuple[LabelFinding, ...]
    triage: TriageStatus
    model: ModelInfo
    trained_on: str
    usecase: UseCase
    """What the model read (a chest radiograph, a head CT): the procedure the SR reports on."""
    heatmaps: np.ndarray | None = None
    """(labels, h, w) in [0, 1], in the order of `findings`."""
    unusable_reason: str | None = None
    """Set when the image could not be read by the model: outputs say so instead of showing findings."""
    windowing: Windowing = DATASET_WINDOW
    """How the image is shown: as the model saw it (a head CT through the brain window)."""

    @classmethod
    def from_result(cls, result: ResultRecord, card: ModelCard, heatmaps: np.ndarray | None) -> ReportContent:
        if result.state is InstanceState.UNUSABLE:
            return cls(
                findings=(),
                triage=TriageStatus.ROUTINE,
                model=card.info,
                trained_on=card.trained_on,
                usecase=card.usecase,
                unusable_reason=result.reason or "the image cannot be read by the model",
                windowing=card.preprocessing.windowing,
            )
        findings = tuple(
            LabelFinding(
                name=label.name,
                display=label.display_name,
                score=result.scores[label.name],
                threshold=label.threshold,
                positive=result.decisions[label.name],
            )
            for label in card.labels
        )
        return cls(
            findings=findings,
            triage=result.triage_status or TriageStatus.ROUTINE,
            model=card.info,
            trained_on=card.trained_on,
            usecase=card.usecase,
            heatmaps=heatmaps,
            windowing=card.preprocessing.windowing,
        )

    @property
    def positives(self) -> list[LabelFinding]:
        return [finding for finding in self.findings if finding.positive]

    @property
    def not_for_clinical_use(self) -> bool:
        return not self.model.trained or "synthetic" in self.trained_on.lower()

    @property
    def summary(self) -> str:
        if self.unusable_reason:
            return f"Image unusable for AI analysis: {self.unusable_reason}."
        if not self.positives:
            return "No abnormality detected by the model."
        return "Suspected: " + ", ".join(f"{f.display} ({f.score:.2f})" for f in self.positives) + "."
