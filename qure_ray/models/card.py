"""Model cards: `models/<name>/model.yaml` says what a model is, what it needs and where its weights are.

Cards are validated when loaded; a bad card raises `ConfigError` naming the file, the field and the
problem, which stops start-up (no model is ever silently missing).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qure_ray.errors import ConfigError
from qure_ray.records import ModelInfo, UseCase
from qure_ray.yaml_config import load_yaml_model


def label_text(name: str) -> str:
    """`pleural_effusion` → `Pleural effusion`: how a label reads when its card gives no display name."""
    return name.replace("_", " ").capitalize()


CARD_FILE = "model.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Architecture(_Frozen):
    builder: Literal["densenet121", "resnet18", "resnet50"]
    """A torchvision classification builder; its first conv is adapted to the input channels."""
    kwargs: dict[str, Any] = Field(default_factory=dict)


class InputSpec(_Frozen):
    channels: Literal[1, 3] = 1
    size: int = Field(ge=32, le=2048)


class Preprocessing(_Frozen):
    window: Literal["dataset", "percentile"] = "dataset"
    """`dataset`: the image's own Window Center/Width when present, else percentiles."""


class Label(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    threshold: float = Field(gt=0.0, lt=1.0)
    display: str = ""

    @property
    def display_name(self) -> str:
        return self.display or label_text(self.name)


class Weights(_Frozen):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelCard(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: str
    usecase: UseCase
    trained: bool
    trained_on: str
    intended_use: str
    architecture: Architecture
    input: InputSpec
    preprocessing: Preprocessing = Preprocessing()
    labels: tuple[Label, ...] = Field(min_length=1)
    weights: Weights
    folder: Path = Field(exclude=True)

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: tuple[Label, ...]) -> tuple[Label, ...]:
        names = [label.name for label in labels]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"label names must be unique; repeated: {duplicates}")
        return labels

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights.file

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, version=self.version, trained=self.trained)

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def verify_weights(self) -> Path:
        """The weights file, after checking it exists and matches the card's sha256."""
        path = self.weights_path
        if not path.is_file():
            raise ConfigError(f"{self.folder / CARD_FILE}: weights.file {self.weights.file!r} does not exist")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.weights.sha256:
            raise ConfigError(
                f"{self.folder / CARD_FILE}: weights.sha256 is {self.weights.sha256} but "
                f"{self.weights.file} hashes to {digest}; the file is corrupt or the card is stale"
            )
        return path


def load_card(path: Path) -> ModelCard:
    """Read and validate one `model.yaml`."""
    return load_yaml_model(path, ModelCard, what="model card", folder=path.parent)
