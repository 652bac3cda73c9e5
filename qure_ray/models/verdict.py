"""From model scores to decisions and triage, using the card's per-label thresholds."""

from __future__ import annotations

from qure_ray.models.card import ModelCard
from qure_ray.records import TriageStatus


def verdict(card: ModelCard, scores: dict[str, float]) -> tuple[TriageStatus, dict[str, bool]]:
    """Each label is positive when its score reaches its threshold; any positive label makes it Critical."""
    decisions = {label.name: scores[label.name] >= label.threshold for label in card.labels}
    triage = TriageStatus.CRITICAL if any(decisions.values()) else TriageStatus.ROUTINE
    return triage, decisions
