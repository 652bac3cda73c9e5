"""From model scores to decisions and triage, using the card's per-label thresholds."""

from __future__ import annotations

from qure_ray.errors import ModelError
from qure_ray.models.card import ModelCard
from qure_ray.records import Prediction, TriageStatus


def check_prediction(card: ModelCard, prediction: Prediction) -> Prediction:
    """`prediction`, if it scores exactly the card's labels, each a number in [0, 1]; else `ModelError`.

    A score of NaN (a half-precision overflow, a broken weight) is below every threshold, so without this check
    the image would be reported Routine, with nothing found. A replica serving another version of the card (a
    rolling update) answers other labels."""
    if sorted(prediction.scores) != sorted(card.label_names):
        raise ModelError(
            f"model {prediction.model.name} {prediction.model.version} scored labels {sorted(prediction.scores)}; "
            f"card {card.name} {card.version} names {sorted(card.label_names)}"
        )
    unreadable = sorted(label for label, score in prediction.scores.items() if not 0.0 <= score <= 1.0)
    if unreadable:  # NaN fails both comparisons
        raise ModelError(
            f"model {prediction.model.name} {prediction.model.version} gave no usable score for "
            f"{', '.join(unreadable)} ({', '.join(str(prediction.scores[label]) for label in unreadable)})"
        )
    return prediction


def verdict(card: ModelCard, scores: dict[str, float]) -> tuple[TriageStatus, dict[str, bool]]:
    """Each label is positive when its score reaches its threshold; any positive label makes it Critical."""
    decisions = {label.name: scores[label.name] >= label.threshold for label in card.labels}
    triage = TriageStatus.CRITICAL if any(decisions.values()) else TriageStatus.ROUTINE
    return triage, decisions
