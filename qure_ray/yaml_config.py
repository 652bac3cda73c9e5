"""Reading a YAML configuration file into a validated pydantic model, with errors that name file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from qure_ray.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: Path, model: type[M], *, what: str, **extra: Any) -> M:
    """`model(**yaml, **extra)`; a bad file raises `ConfigError` naming `path`, the field and the problem."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the {what} is a YAML mapping, got {type(raw).__name__}")
    try:
        return model(**raw, **extra)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in error['loc'])}': {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
