"""The JSON body of `GET /results/{uid}` (Qure.ai Platform API shape), built from a `ResultRecord`."""

from __future__ import annotations

from typing import Any

from qure_ray.models.card import label_text
from qure_ray.records import ResultRecord


def result_body(result: ResultRecord, *, files: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The 200 body: findings text, triage, scores, decisions, model and timings."""
    positives = [label for label, positive in result.decisions.items() if positive]
    findings_list = [
        [label, f"{label_text(label)} suspected (score {result.scores[label]:.2f})"] for label in positives
    ]
    if positives:
        findings = "; ".join(text for _, text in findings_list) + "."
        impression = f"Abnormal: {', '.join(label_text(label).lower() for label in positives)}."
    else:
        findings = "No abnormality detected by the model."
        impression = "Normal study as assessed by the model."
    model = result.model.to_json() if result.model else None
    if result.model and not result.model.trained:
        impression += " Model not trained: results are not meaningful (demonstration only)."
    body: dict[str, Any] = {
        "message": "Result is ready",
        "status": result.state.value,
        "triage_status": result.triage_status.value if result.triage_status else None,
        "usecase": result.usecase.value,
        "result": {
            "report": {"findings": findings, "impression": impression, "findings_list": findings_list},
            "scores": result.scores,
            "decisions": result.decisions,
            "files": files or {},
        },
        "model": model,
        "timings": result.timings_s,
    }
    if result.usecase.per_series:
        body["series"] = {
            "series_instance_uid": result.sop_uid,
            "slices_read": len(result.slices),
            "key_slices": result.key_slices,
            "slice_scores": result.slices,
        }
    return body
