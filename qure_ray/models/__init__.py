"""Model cards, the registry, network builders and inference (the Serve deployment is in `deployment`)."""

from qure_ray.models.card import ModelCard, load_card
from qure_ray.models.registry import load_registry
from qure_ray.models.verdict import verdict

__all__ = ["ModelCard", "load_card", "load_registry", "verdict"]
