"""The platform's shared vocabulary: instance states, use cases, and the records that flow between parts.

Plain frozen dataclasses and enums; every part (api, pipeline, storage) speaks these, never dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np


class InstanceState(StrEnum):
    """`received → queued → processing → done | unusable | unsupported | failed` (DESIGN.md §3).

    Slices of a per-series use case (head CT) go `processing → held` and wait there for their series to
    start (`GET /compute/{SeriesInstanceUID}` or a quiet period); the series then finishes them together.
    """

    RECEIVED = "received"
    QUEUED = "queued"
    PROCESSING = "processing"
    HELD = "held"
    DONE = "done"
    UNUSABLE = "unusable"
    UNSUPPORTED = "unsupported"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATES


_FINAL_STATES = frozenset({InstanceState.DONE, InstanceState.UNUSABLE, InstanceState.UNSUPPORTED, InstanceState.FAILED})
UNFINISHED_STATES = (InstanceState.RECEIVED, InstanceState.QUEUED, InstanceState.PROCESSING)


class UseCase(StrEnum):
    """The clinical use cases a model can serve."""

    QXR = "qxr"  # chest X-ray, one result per instance
    QER = "qer"  # head CT, one result per series
    UNSUPPORTED = "unsupported"

    @property
    def per_series(self) -> bool:
        """Whether the use case reads a whole series (results by SeriesInstanceUID) rather than one image."""
        return self is UseCase.QER


class IngestOutcomeKind(StrEnum):
    """What happened to an upload of a SOPInstanceUID the source had already stored."""

    DUPLICATE = "duplicate"  # same content: accepted, not processed again
    CONFLICT = "conflict"  # different content: refused (the default policy)
    OVERWRITTEN = "overwritten"  # different content, source allows overwrite: stored and reprocessed


class TriageStatus(StrEnum):
    CRITICAL = "Critical"
    ROUTINE = "Routine"


@dataclass(frozen=True, kw_only=True)
class InstanceRef:
    """Identifies one stored instance of one source; what the queue carries."""

    source: str
    sop_uid: str
    object_key: str
    priority: int = 0


@dataclass(frozen=True, kw_only=True)
class InstanceRecord:
    """An instance as the catalog knows it: its metadata row joined with its latest state."""

    source: str
    sop_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    modality: str
    body_part: str
    view_position: str
    series_description: str
    rows: int
    columns: int
    transfer_syntax: str
    size_bytes: int
    sha256: str
    object_key: str
    received_at: datetime
    state: InstanceState
    reason: str = ""

    @property
    def ref(self) -> InstanceRef:
        return InstanceRef(source=self.source, sop_uid=self.sop_uid, object_key=self.object_key)


class SeriesTrigger(StrEnum):
    """What started a per-series computation."""

    COMPUTE = "compute"  # GET /compute/{SeriesInstanceUID}
    QUIET_PERIOD = "quiet period"  # no new instance of the series for QURE_SERIES_QUIET_PERIOD_S


class SeriesStart(StrEnum):
    """The answer to a request to start a series (`GET /compute`: 200, 304, 404)."""

    STARTED = "started"
    ALREADY_STARTED = "already started"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class SeriesRef:
    """A series whose computation has started and has no result yet."""

    source: str
    series_uid: str


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"  # the receiver answered 2xx
    RETRYING = "retrying"  # it did not; another attempt follows
    GAVE_UP = "gave_up"  # the last attempt failed


@dataclass(frozen=True, kw_only=True)
class Webhook:
    """A source's callback for final results."""

    source: str
    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Notification:
    """One final result to announce to its source's webhook: UIDs and status only, never PHI."""

    result_row_id: str
    source: str
    uid: str
    """What `GET /results/{uid}` takes: the SOPInstanceUID, or the SeriesInstanceUID of a per-series result."""
    study_uid: str
    series_uid: str
    usecase: str
    status: str
    triage_status: str | None
    finished_at: datetime
    webhook: Webhook
    attempts_made: int = 0
    """Attempts recorded before this one was picked up (by this or an earlier run of the platform)."""

    def payload(self, results_base_url: str) -> dict[str, Any]:
        per_series = self.uid == self.series_uid
        return {
            "event": "result.final",
            "source": self.source,
            "study_instance_uid": self.study_uid,
            "series_instance_uid": self.series_uid,
            "sop_instance_uid": None if per_series else self.uid,
            "usecase": self.usecase,
            "status": self.status,
            "triage_status": self.triage_status,
            "finished_at": self.finished_at.isoformat(),
            "result_url": f"{results_base_url.rstrip('/')}/results/{self.uid}",
        }


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    name: str
    version: str
    trained: bool
    trained_on: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "trained": self.trained, "trained_on": self.trained_on}


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """What a model deployment returns for one image."""

    scores: dict[str, float]
    model: ModelInfo
    heatmaps: np.ndarray | None = field(default=None, compare=False, repr=False)
    """(labels, h, w) float16 in [0, 1], in the order of the card's labels: where each label's evidence is."""


FRAMES_SEGMENT = "/frames/"


def slice_key(sop_uid: str, frame: int | None = None) -> str:
    """How a series result names a slice: its SOPInstanceUID, or for a frame of a multi-frame object (an enhanced
    CT holds a whole series) `SOPInstanceUID/frames/N`, N from 1, as DICOMweb names a frame."""
    return sop_uid if frame is None else f"{sop_uid}{FRAMES_SEGMENT}{frame}"


def slice_of(key: str) -> tuple[str, int | None]:
    """The SOPInstanceUID and frame number (None: a single-frame object) a `slice_key` names."""
    sop_uid, _, frame = key.partition(FRAMES_SEGMENT)
    return sop_uid, int(frame) if frame else None


@dataclass(frozen=True, kw_only=True)
class ResultRecord:
    """The outcome of one instance, or of one series for a per-series use case: what `GET /results` serves."""

    source: str
    sop_uid: str
    """The SOPInstanceUID, or the SeriesInstanceUID of a per-series result."""
    usecase: UseCase
    state: InstanceState
    triage_status: TriageStatus | None = None
    scores: dict[str, float] = field(default_factory=dict)
    decisions: dict[str, bool] = field(default_factory=dict)
    model: ModelInfo | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    assets: dict[str, list[str]] = field(default_factory=dict)
    """Asset kind (`sc`, `report_pdf`, ...) → object keys on the store (a series has one SC per key slice)."""
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per-series results: each slice (`slice_key`) → its scores; the series scores are their maximum."""

    @classmethod
    def without_model(cls, source: str, uid: str, state: InstanceState, reason: str) -> ResultRecord:
        """A result no model produced: unsupported, or settled before a model could read it."""
        return cls(source=source, sop_uid=uid, usecase=UseCase.UNSUPPORTED, state=state, reason=reason)

    @property
    def key_slices(self) -> list[str]:
        """A series result's key slices: for each label in turn, the slice that scored highest (distinct)."""
        if not self.slices:
            return []
        labels = next(iter(self.slices.values())).keys()
        chosen = [max(self.slices, key=lambda sop: self.slices[sop][label]) for label in labels]
        return list(dict.fromkeys(chosen))

    def to_row(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sop_uid": self.sop_uid,
            "usecase": self.usecase.value,
            "state": self.state.value,
            "triage_status": self.triage_status.value if self.triage_status else None,
            "scores_json": json.dumps(self.scores),
            "decisions_json": json.dumps(self.decisions),
            "model_name": self.model.name if self.model else None,
            "model_version": self.model.version if self.model else None,
            "model_trained": self.model.trained if self.model else None,
            "model_trained_on": self.model.trained_on if self.model else None,
            "timings_json": json.dumps(self.timings_s),
            "reason": self.reason,
            "assets_json": json.dumps(self.assets),
            "slices_json": json.dumps(self.slices),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ResultRecord:
        model = None
        if row.get("model_name"):
            model = ModelInfo(
                name=row["model_name"],
                version=row["model_version"],
                trained=bool(row["model_trained"]),
                trained_on=row.get("model_trained_on") or "",
            )
        return cls(
            source=row["source"],
            sop_uid=row["sop_uid"],
            usecase=UseCase(row["usecase"]),
            state=InstanceState(row["state"]),
            triage_status=TriageStatus(row["triage_status"]) if row.get("triage_status") else None,
            scores=json.loads(row["scores_json"] or "{}"),
            decisions=json.loads(row["decisions_json"] or "{}"),
            model=model,
            timings_s=json.loads(row["timings_json"] or "{}"),
            reason=row.get("reason") or "",
            assets={  # rows written before series results held one key per kind
                kind: keys if isinstance(keys, list) else [keys]
                for kind, keys in json.loads(row.get("assets_json") or "{}").items()
            },
            slices=json.loads(row.get("slices_json") or "{}"),
        )
