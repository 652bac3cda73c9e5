"""Network builders: torchvision architectures adapted to the card's input channels and labels."""

from __future__ import annotations

import io
from typing import cast

import torch
import torchvision
from torch import nn

from qure_ray.errors import ModelError
from qure_ray.models.card import ModelCard


def build_network(card: ModelCard) -> nn.Module:
    """An untrained network of the card's architecture, `channels` in, one logit per label out."""
    architecture = card.architecture
    network: nn.Module
    if architecture.builder == "densenet":  # a class, not a builder of pretrained weights
        network = torchvision.models.DenseNet(**architecture.kwargs, num_classes=len(card.labels))
    else:
        builder = getattr(torchvision.models, architecture.builder)
        network = builder(weights=None, num_classes=len(card.labels), **architecture.kwargs)
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
    """The card's network with its verified weights, in eval mode on `device` (float32; channels_last on CUDA,
    as its inputs are): what a replica serves, and what the bench times."""
    data = card.verified_weights()
    try:
        network = load_weights(build_network(card), data)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelError(
            f"{card.weights_path}: weights do not fit a {card.architecture.builder} for this card: {exc}"
        ) from exc
    network = network.to(device).eval()
    return network.to(memory_format=torch.channels_last) if device.type == "cuda" else network


def load_weights(network: nn.Module, data: bytes) -> nn.Module:
    """`network` with the state of a weights file (float16 on disk, float32 in the network)."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    network.load_state_dict({key: value.float() for key, value in state.items()})
    return network


def weights_bytes(network: nn.Module) -> bytes:
    """The network's state_dict as a weights file: float16 (halves the file; `load_network` reads float32)."""
    buffer = io.BytesIO()
    state = network.state_dict()
    torch.save({key: value.half() if value.is_floating_point() else value for key, value in state.items()}, buffer)
    return buffer.getvalue()


def save_seeded_weights(card: ModelCard, *, seed: int) -> bytes:
    """Seeded random-initialised weights for a card, as a weights file."""
    torch.manual_seed(seed)
    return weights_bytes(build_network(card))
