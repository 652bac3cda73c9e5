"""Routing as data: use-case rules and per-source enabled use cases, read from a YAML file.

`RoutingTable.route(facts)` returns the use case of the first matching rule, or `unsupported` with a
reason that names the tags (or that the source has not enabled the matched use case). `Router` is the table
as a deployment applies it: a use case without a model card is unsupported too. Ingest and the job manager
route with the same `Router`: ingest settles what no use case reads, the job manager runs the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qure_ray.dicom.instance import InstanceMetadata
from qure_ray.models.registry import load_registry
from qure_ray.records import InstanceRecord, UseCase
from qure_ray.yaml_config import load_yaml_model

SHIPPED_RULES = Path(__file__).with_name("rules.yaml")


@dataclass(frozen=True, kw_only=True)
class InstanceFacts:
    """The tags (and the uploading source) routing looks at."""

    modality: str
    body_part: str
    view_position: str
    series_description: str = ""
    sop_class: str = ""
    source: str = ""

    @classmethod
    def of(cls, metadata: InstanceMetadata | InstanceRecord, *, source: str) -> InstanceFacts:
        return cls(
            modality=metadata.modality,
            body_part=metadata.body_part,
            view_position=metadata.view_position,
            series_description=metadata.series_description,
            sop_class=metadata.sop_class_uid,
            source=source,
        )


@dataclass(frozen=True)
class RoutingDecision:
    usecase: UseCase
    reason: str
    rule: str | None = None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Match(_Frozen):
    modality: tuple[str, ...] | None = None
    body_part: tuple[str, ...] | None = None
    view_position: tuple[str, ...] | None = None
    sop_class: tuple[str, ...] | None = None
    source: tuple[str, ...] | None = None
    series_description: str | None = None

    @field_validator("series_description")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern

    def matches(self, facts: InstanceFacts) -> bool:
        for name in ("modality", "body_part", "view_position", "sop_class", "source"):
            allowed = getattr(self, name)
            if allowed is not None and getattr(facts, name).upper() not in {value.upper() for value in allowed}:
                return False
        return (
            self.series_description is None or re.search(self.series_description, facts.series_description) is not None
        )


class Rule(_Frozen):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    usecase: UseCase
    match: Match


def _default_sources() -> dict[str, tuple[UseCase, ...]]:
    return {"default": (UseCase.QXR,)}


class RoutingTable(_Frozen):
    rules: tuple[Rule, ...] = Field(min_length=1)
    sources: dict[str, tuple[UseCase, ...]] = Field(default_factory=_default_sources)

    def enabled(self, source: str) -> tuple[UseCase, ...]:
        return self.sources.get(source, self.sources.get("default", ()))

    def route(self, facts: InstanceFacts) -> RoutingDecision:
        for rule in self.rules:
            if rule.match.matches(facts):
                if rule.usecase not in self.enabled(facts.source):
                    enabled = ", ".join(u.value for u in self.enabled(facts.source)) or "none"
                    return RoutingDecision(
                        UseCase.UNSUPPORTED,
                        f"the image matches use case {rule.usecase.value!r} (rule {rule.name}), which source "
                        f"{facts.source!r} has not enabled (enabled: {enabled}); ask for it to be enabled",
                        rule.name,
                    )
                return RoutingDecision(rule.usecase, f"rule {rule.name}", rule.name)
        return RoutingDecision(
            UseCase.UNSUPPORTED,
            f"no use case for Modality {facts.modality or '(empty)'}, BodyPartExamined "
            f"{facts.body_part or '(empty)'}, ViewPosition {facts.view_position or '(empty)'}; supported: "
            + "; ".join(f"{rule.name} → {rule.usecase.value}" for rule in self.rules),
        )


def load_routing(path: Path = SHIPPED_RULES) -> RoutingTable:
    """Read and validate a routing file; a bad file raises `ConfigError` naming the file and the field."""
    return load_yaml_model(path, RoutingTable, what="routing rules")


@dataclass(frozen=True)
class Router:
    table: RoutingTable
    served: frozenset[UseCase]
    """The use cases that have a model card (and so a model deployment)."""

    @classmethod
    def load(cls, routing_file: Path, models_dir: Path) -> Router:
        return cls(load_routing(routing_file), frozenset(load_registry(models_dir, verify_weights=False)))

    def route(self, facts: InstanceFacts) -> RoutingDecision:
        decision = self.table.route(facts)
        if decision.usecase is UseCase.UNSUPPORTED or decision.usecase in self.served:
            return decision
        return RoutingDecision(
            UseCase.UNSUPPORTED,
            f"the image matches use case {decision.usecase.value!r} ({decision.reason}), which has no model "
            "deployed here",
            decision.rule,
        )
