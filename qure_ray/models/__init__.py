"""Model cards, the registry, network builders and inference (the Serve deployment is in `deployment`).

The demo models are trained in the repository: `phantoms` draws synthetic images with findings,
`datasets` turns them into model inputs the way partners' DICOM arrives, `training` follows a card's
`training:` section and `evaluation` measures ROC AUC on fresh phantoms (`qure-ray models train | eval`).
"""

from qure_ray.models.card import ModelCard, load_card
from qure_ray.models.registry import load_registry
from qure_ray.models.verdict import verdict

__all__ = ["ModelCard", "load_card", "load_registry", "verdict"]
