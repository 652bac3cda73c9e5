"""Where the files that ship with qure_ray are, in a repository checkout or an installed wheel. No imports
beyond the standard library: the bare-machine model sweep (`qure_ray.models.timing`) reads it too."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_MODELS_DIR = (
    _PACKAGE_DIR / "shipped_models" if (_PACKAGE_DIR / "shipped_models").is_dir() else _PACKAGE_DIR.parent / "models"
)
"""The models that come with qure_ray: the repository's `models/`, or its copy in an installed wheel."""
SHIPPED_ROUTING_FILE = _PACKAGE_DIR / "routing" / "rules.yaml"
