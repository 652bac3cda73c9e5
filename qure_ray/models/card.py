"""Model cards: `models/<name>/model.yaml` says what a model is, what it needs and where its weights are.

Cards are validated when loaded; a bad card raises `ConfigError` naming the file, the field and the
problem, which stops start-up (no model is ever silently missing). A card may carry a `training:`
section, the recipe `qure-ray models train` follows (phantoms, split, optimiser, seeds); training writes
the card back (`write_card`) with the new weights' sha256, the chosen thresholds and `validation_auc`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qure_ray.dicom.pixels import Windowing
from qure_ray.errors import ConfigError
from qure_ray.models.phantoms import PhantomKind
from qure_ray.records import ModelInfo, UseCase
from qure_ray.yaml_config import load_yaml_model


def label_text(name: str) -> str:
    """`pleural_effusion` → `Pleural effusion`: how a label reads when its card gives no display name."""
    return name.replace("_", " ").capitalize()


CARD_FILE = "model.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


DENSENET_KWARGS = frozenset({"growth_rate", "block_config", "num_init_features", "bn_size", "drop_rate"})


class Architecture(_Frozen):
    builder: Literal["densenet", "densenet121", "resnet18", "resnet50"]
    """A torchvision classification builder; its first conv is adapted to the input channels. `densenet` is
    `torchvision.models.DenseNet(**kwargs)`: a DenseNet of any depth and width."""
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _densenet_kwargs(self) -> Architecture:
        unknown = sorted(set(self.kwargs) - DENSENET_KWARGS) if self.builder == "densenet" else []
        if unknown:
            raise ValueError(f"kwargs {unknown} are not DenseNet arguments; use {sorted(DENSENET_KWARGS)}")
        return self


class InputSpec(_Frozen):
    channels: Literal[1, 3] = 1
    size: int = Field(ge=32, le=2048)


MAX_BATCH_SIZE = 1024
MAX_BATCH_WAIT_S = 10.0
"""The limits on a card's `serving:`, and on the operator's overrides of it (`config.Settings`)."""


class Preprocessing(_Frozen):
    window: Literal["dataset", "percentile", "fixed"] = "dataset"
    """`dataset`: the image's own Window Center/Width when present, else percentiles; `fixed`: `center` and
    `width` (modality units, e.g. HU) for every image (`qure_ray.dicom.pixels.Windowing`)."""
    center: float | None = None
    width: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fixed_window(self) -> Preprocessing:
        self.windowing  # noqa: B018 - Windowing refuses what it cannot apply
        return self

    @property
    def windowing(self) -> Windowing:
        return Windowing(self.window, self.center, self.width)


class Label(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    threshold: float = Field(gt=0.0, lt=1.0)
    display: str | None = None

    @property
    def display_name(self) -> str:
        return self.display or label_text(self.name)


class Weights(_Frozen):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Training(_Frozen):
    """How `qure-ray models train` makes the weights: phantoms generated in code, sent through the same
    DICOM path as partners' images, multi-label BCE, everything seeded."""

    phantom: PhantomKind
    images: PositiveInt
    """Training images; `validation_images` more come from the same seed, for thresholds and a check."""
    validation_images: PositiveInt
    prevalence: float = Field(gt=0.0, lt=1.0)
    """Share of images showing each label (exact per label, labels independent)."""
    epochs: PositiveInt
    batch_size: PositiveInt
    learning_rate: PositiveFloat
    """Peak of the one-cycle schedule (AdamW)."""
    weight_decay: NonNegativeFloat = 0.0
    seed: int
    threads: PositiveInt = 2
    """`torch.set_num_threads` while training: results are reproducible for a given thread count."""
    phantom_size: int = Field(default=256, ge=64, le=1024)
    slice_positions: tuple[float, float] | None = None
    """Head CT only: slices are cut uniformly in this `slice_position` range (default: a series' range,
    `phantoms.HEAD_SERIES_POSITIONS`)."""


class Serving(_Frozen):
    """How Serve batches this model; `QURE_MODEL_MAX_BATCH_SIZE`/`..._BATCH_WAIT_TIMEOUT_S` override it."""

    max_batch_size: int = Field(default=8, ge=1, le=MAX_BATCH_SIZE)
    batch_wait_timeout_s: float = Field(default=0.02, ge=0.0, le=MAX_BATCH_WAIT_S)


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
    serving: Serving = Serving()
    training: Training | None = None
    validation_auc: dict[str, float] | None = None
    """Written by training: each label's ROC AUC on the validation split."""
    folder: Path = Field(exclude=True)

    @field_validator("usecase")
    @classmethod
    def _a_served_usecase(cls, usecase: UseCase) -> UseCase:
        if usecase is UseCase.UNSUPPORTED:
            served = [u.value for u in UseCase if u is not UseCase.UNSUPPORTED]
            raise ValueError(
                f"'unsupported' is what routing answers when no model serves an image; a card serves one of {served}"
            )
        return usecase

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: tuple[Label, ...]) -> tuple[Label, ...]:
        names = [label.name for label in labels]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"label names must be unique; repeated: {duplicates}")
        return labels

    @field_validator("training")
    @classmethod
    def _labels_have_phantom_findings(cls, training: Training | None, info: ValidationInfo) -> Training | None:
        labels: tuple[Label, ...] = info.data.get("labels", ())
        missing = [label.name for label in labels if training and label.name not in training.phantom.findings]
        if training and missing:
            raise ValueError(
                f"labels {missing} have no signature in {training.phantom.value} phantoms, so training cannot "
                f"teach them; phantom findings: {list(training.phantom.findings)}"
            )
        return training

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights.file

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, version=self.version, trained=self.trained, trained_on=self.trained_on)

    def batching(self, *, max_batch_size: int = 0, batch_wait_timeout_s: float = 0.0) -> Serving:
        """The card's batching, with the operator's non-zero settings taking precedence."""
        return Serving(
            max_batch_size=max_batch_size or self.serving.max_batch_size,
            batch_wait_timeout_s=batch_wait_timeout_s or self.serving.batch_wait_timeout_s,
        )

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def verified_weights(self) -> bytes:
        """The weights file's bytes, checked against the card's sha256: load these, not the file again (it
        could change in between)."""
        path = self.weights_path
        if not path.is_file():
            raise ConfigError(f"{self.folder / CARD_FILE}: weights.file {self.weights.file!r} does not exist")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.weights.sha256:
            raise ConfigError(
                f"{self.folder / CARD_FILE}: weights.sha256 is {self.weights.sha256} but "
                f"{self.weights.file} hashes to {digest}; the file is corrupt or the card is stale"
            )
        return data


def load_card(path: Path) -> ModelCard:
    """Read and validate one `model.yaml`."""
    return load_yaml_model(path, ModelCard, what="model card", folder=path.parent)


def write_card(card: ModelCard, path: Path) -> None:
    """Write `card` as `model.yaml`: fields in declaration order, sections as blocks, each label and each
    list of numbers on one line."""
    header = f"# Model card ({__name__}); `qure-ray models train {card.name}` rewrites it.\n"
    data = card.model_dump(mode="json", exclude_none=True)
    data["labels"] = [_OneLine(label) for label in data["labels"]]
    body = yaml.dump(data, Dumper=_CardDumper, sort_keys=False, width=110, allow_unicode=True)
    path.write_text(header + body)


class _OneLine(dict[str, Any]):
    """A mapping written in flow style: `{name: nodule, threshold: 0.5}`."""


class _CardDumper(yaml.SafeDumper):
    def represent_list(self, data: Any) -> yaml.SequenceNode:
        scalars = all(not isinstance(item, dict | list) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=scalars)


_CardDumper.add_representer(list, _CardDumper.represent_list)
_CardDumper.add_representer(
    _OneLine, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)
