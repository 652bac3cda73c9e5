"""Network builders: torchvision architectures adapted to the card's input channels and labels."""

from __future__ import annotations

from typing import cast

import torch
import torchvision
from torch import nn

from qure_ray.errors import ModelError
from qure_ray.models.card import ModelCard


def build_network(card: ModelCard) -> nn.Module:
    """An untrained network of the card's architecture, `channels` in, one logit per label out."""
    builder = getattr(torchvision.models, card.architecture.builder)
    network: nn.Module = builder(weights=None, num_classes=len(card.labels), **card.architecture.kwargs)
    if card.input.channels != 3:
        _adapt_first_conv(network, card.input.channels)
    return network


def _adapt_first_conv(network: nn.Module, channels: int) -> None:
    if hasattr(network, "features") and hasattr(network.features, "conv0"):  # DenseNet
        old = cast(nn.Conv2d, network.features.conv0)
        network.features.conv0 = nn.Conv2d(channels, old.out_channels, 7, 2, 3, bias=False)
    elif hasattr(network, "conv1"):  # ResNet
        old = cast(nn.Conv2d, network.conv1)
        network.conv1 = nn.Conv2d(channels, old.out_channels, 7, 2, 3, bias=False)
    else:  # pragma: no cover - guarded by the card's Literal of builders
        raise ModelError(f"do not know how to adapt {type(network).__name__} to {channels} channel(s)")


def load_network(card: ModelCard, device: torch.device) -> nn.Module:
    """The card's network with its verified weights, in eval mode on `device` (float32)."""
    path = card.verify_weights()
    network = build_network(card)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict({key: value.float() for key, value in state.items()})
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelError(f"{path}: weights do not fit a {card.architecture.builder} for this card: {exc}") from exc
    return network.to(device).eval()


def save_seeded_weights(card: ModelCard, *, seed: int) -> bytes:
    """Seeded random-initialised weights for a card, as float16 (halves the file; loaded as float32)."""
    import io

    torch.manual_seed(seed)
    network = build_network(card)
    buffer = io.BytesIO()
    torch.save(
        {key: value.half() if value.is_floating_point() else value for key, value in network.state_dict().items()},
        buffer,
    )
    return buffer.getvalue()
