"""Typed answers of the platform: per-file upload outcomes and results, parsed from its JSON once.

Each parser fails with `ProtocolError` naming the field when a reply is not the shape this client knows;
the raw JSON stays available as `raw` for anything newer than these classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from qure_ray.client.errors import ProtocolError, UploadRefused
from qure_ray.records import ModelInfo, TriageStatus


class ResultStatus(StrEnum):
    """What `GET /results/{uid}` said, as a closed set (a failed result raises `ProcessingFailed` instead)."""

    PENDING = "pending"  # 202: queued, processing, or a head-CT series waiting to start
    DONE = "done"  # 200: findings, scores and assets
    UNUSABLE = "unusable"  # 206: a supported modality but an image that cannot be read; assets say why
    UNSUPPORTED = "unsupported"  # 400: no use case for this image, or the source has not enabled it

    @property
    def is_final(self) -> bool:
        return self is not ResultStatus.PENDING


PACS_KINDS = ("sc", "report_sr", "report_dcm")
"""The asset kinds a PACS shows: Secondary Captures, the SR and the Encapsulated PDF (all DICOM)."""


class ComputeStatus(StrEnum):
    """The answer of `GET /compute/{SeriesInstanceUID}`."""

    STARTED = "started"  # 200
    ALREADY_STARTED = "already started"  # 304


@dataclass(frozen=True, kw_only=True)
class FileOutcome:
    """What the platform did with one uploaded file."""

    path: str
    """The local file, or `archive.zip!member` for a member of a zip."""
    sop_uid: str
    series_uid: str
    study_uid: str
    accepted: bool
    created: bool
    """False for a file the platform already held with the same content (a re-upload, or a retried batch)."""
    message: str
    code: str = ""
    """The refusal's rule code (`no-preamble`, `duplicate-conflict`, ...), empty when accepted."""

    @classmethod
    def refused(cls, path: str, message: str, *, code: str) -> FileOutcome:
        """A file the platform refused without reading it (the request that carried it alone was refused)."""
        unread = {"sop_uid": "", "series_uid": "", "study_uid": ""}
        return cls(path=path, **unread, accepted=False, created=False, message=message, code=code)

    @classmethod
    def from_reply(cls, path: str, entry: Mapping[str, Any]) -> FileOutcome:
        """One `messages.<field>` entry of the Qure-style upload reply."""
        metadata = _mapping(entry.get("metadata") or {}, "messages.<field>.metadata")
        error = entry.get("error")
        return cls(
            path=path,
            sop_uid=str(metadata.get("SOPInstanceUID", "")),
            series_uid=str(metadata.get("SeriesInstanceUID", "")),
            study_uid=str(metadata.get("StudyInstanceUID", "")),
            accepted=error is None,
            created=bool(entry.get("created", False)),
            message=str(entry.get("message", "")),
            code=str(_mapping(error, "messages.<field>.error").get("code", "")) if error is not None else "",
        )


@dataclass(frozen=True)
class SkippedFile:
    """A file found in a folder or zip that is not DICOM Part 10, so it was not sent."""

    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class UploadReport:
    files: tuple[FileOutcome, ...]
    skipped: tuple[SkippedFile, ...] = ()

    @property
    def accepted(self) -> tuple[FileOutcome, ...]:
        return tuple(f for f in self.files if f.accepted)

    @property
    def refused(self) -> tuple[FileOutcome, ...]:
        return tuple(f for f in self.files if not f.accepted)

    def raise_for_refused(self) -> None:
        """Raise `UploadRefused` when any file was refused (`upload` itself raises only when all were)."""
        if self.refused:
            raise UploadRefused(self)


@dataclass(frozen=True, kw_only=True)
class UploadProgress:
    """Where an upload stands, after each batch."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True, kw_only=True)
class SeriesInfo:
    """The `series` object of a per-series (head CT) result."""

    series_instance_uid: str
    slices_read: int
    key_slices: tuple[str, ...]
    slice_scores: dict[str, dict[str, float]]


@dataclass(frozen=True, kw_only=True)
class Result:
    """One answer of `GET /results/{uid}`."""

    uid: str
    """The UID asked about: a SOPInstanceUID, or a SeriesInstanceUID for head CT."""
    status: ResultStatus
    message: str
    state: str = ""
    """The platform's own state word (`queued`, `processing`, `held`, `done`, `unusable`, ...)."""
    triage_status: TriageStatus | None = None
    usecase: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    decisions: dict[str, bool] = field(default_factory=dict)
    findings: str = ""
    impression: str = ""
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Asset kind (`sc`, `report_sr`, `report_dcm`, `report_pdf`, `sc_full_png`, `original`, ...) → URLs."""
    model: ModelInfo | None = None
    series: SeriesInfo | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    retry_after_s: float | None = None
    """For a pending result: how long the platform asked the client to wait."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def result_uid(self) -> str:
        """The UID the result is stored under: the series' for a head-CT result, else the asked UID."""
        return self.series.series_instance_uid if self.series else self.uid

    @property
    def positives(self) -> list[str]:
        return [label for label, positive in self.decisions.items() if positive]

    @classmethod
    def parse(
        cls, uid: str, status: ResultStatus, body: Mapping[str, Any], *, retry_after_s: float | None = None
    ) -> Result:
        """A result from the JSON body of a 200, 202, 206 or (unsupported) 400 answer."""
        result = _mapping(body.get("result") or {}, "result")
        report = _mapping(result.get("report") or {}, "result.report")
        triage = body.get("triage_status")
        try:
            return cls(
                uid=uid,
                status=status,
                message=str(body.get("message", "")),
                state=str(body.get("status", status.value)),
                triage_status=TriageStatus(triage) if triage else None,
                usecase=str(body.get("usecase") or ""),
                scores=_scores(result.get("scores"), "result.scores"),
                decisions={str(k): bool(v) for k, v in _mapping(result.get("decisions") or {}, "decisions").items()},
                findings=str(report.get("findings", "")),
                impression=str(report.get("impression", "")),
                files={
                    str(k): tuple(map(str, v)) for k, v in _mapping(result.get("files") or {}, "result.files").items()
                },
                model=_model(body.get("model")),
                series=_series(body.get("series")),
                timings_s=_scores(body.get("timings"), "timings"),
                retry_after_s=retry_after_s,
                raw=dict(body),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"the result of {uid} has a field this client cannot read: {exc}") from exc


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"`{where}` in the platform's reply should be a JSON object, not {type(value).__name__}")
    return value


def _scores(value: object, where: str) -> dict[str, float]:
    return {str(k): float(v) for k, v in _mapping(value or {}, where).items()}


def _model(value: object) -> ModelInfo | None:
    if value is None:
        return None
    model = _mapping(value, "model")
    return ModelInfo(
        name=str(model.get("name", "")),
        version=str(model.get("version", "")),
        trained=bool(model.get("trained", False)),
        trained_on=str(model.get("trained_on") or ""),
    )


def _series(value: object) -> SeriesInfo | None:
    if value is None:
        return None
    series = _mapping(value, "series")
    scores = _mapping(series.get("slice_scores") or {}, "series.slice_scores")
    return SeriesInfo(
        series_instance_uid=str(series["series_instance_uid"]),
        slices_read=int(series.get("slices_read", 0)),
        key_slices=tuple(map(str, series.get("key_slices") or ())),
        slice_scores={str(sop): _scores(s, f"series.slice_scores.{sop}") for sop, s in scores.items()},
    )
