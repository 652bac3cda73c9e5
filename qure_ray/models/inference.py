"""The pure part of a model replica: choose the device, run a batch, turn logits into scores."""

from __future__ import annotations

import logging

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from qure_ray.errors import ModelError
from qure_ray.models.cam import forward_with_cam
from qure_ray.models.card import ModelCard
from qure_ray.records import Prediction

logger = logging.getLogger(__name__)


def select_device(*, num_gpus: float, cuda_available: bool) -> torch.device:
    """CUDA when the replica was given GPUs; never a device picked behind the operator's back."""
    if num_gpus > 0:
        if not cuda_available:
            raise ModelError(
                f"the model deployment asks for num_gpus={num_gpus} but CUDA is not available on this node "
                "(torch.cuda.is_available() is False); set num_gpus: 0 in serve_config.yaml to run on CPU, "
                "or schedule the replica on a GPU node with a CUDA build of torch"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def warm_up(network: nn.Module, card: ModelCard, device: torch.device, *, max_batch_size: int) -> None:
    """Run a full and a single-image batch once, so the first requests do not pay for CUDA kernel
    selection and allocator growth (and a broken device fails at start, not on a patient's image)."""
    blank = np.zeros((card.input.size, card.input.size), np.float32)
    for size in sorted({1, max_batch_size}):
        predict_batch(network, card, [blank] * size, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def half_precision_forward(network: nn.Module, batch: Tensor) -> tuple[Tensor, Tensor]:
    """`forward_with_cam` with the backbone in float16 (autocast on the batch's device), and the images that
    overflowed it read again in float32 (`_redo_overflowed`)."""
    with torch.autocast(batch.device.type, dtype=torch.float16):
        logits, cams = forward_with_cam(network, batch)
    return _redo_overflowed(network, batch, logits, cams)


def _redo_overflowed(network: nn.Module, batch: Tensor, logits: Tensor, cams: Tensor) -> tuple[Tensor, Tensor]:
    """`logits` and `cams` of a half-precision pass, with the images whose values overflowed it (infinity or NaN
    in the fp16 backbone) run again in full precision. Left as they were, their scores would fail the image
    (`check_prediction`) where float32 reads it."""
    overflowed = ~(torch.isfinite(logits).all(dim=1) & torch.isfinite(cams).flatten(1).all(dim=1))
    count = int(overflowed.sum())
    if count == 0:
        return logits, cams
    logger.warning("%d of %d images overflowed half precision; read again in float32", count, len(batch))
    again_logits, again_cams = forward_with_cam(network, batch[overflowed])  # outside autocast: float32
    logits, cams = logits.clone(), cams.clone()
    logits[overflowed], cams[overflowed] = again_logits, again_cams  # the head runs in float32 either way
    return logits, cams


@torch.inference_mode()
def predict_batch(
    network: nn.Module, card: ModelCard, images: list[NDArray[np.float32]], device: torch.device
) -> list[Prediction]:
    """Scores (sigmoid of each label's logit) and a low-resolution heatmap per label, for each image."""
    for image in images:
        if image.shape != (card.input.size, card.input.size):
            raise ModelError(f"{card.name} expects {card.input.size}x{card.input.size} images, got {image.shape}")
    batch = torch.from_numpy(np.stack(images)).unsqueeze(1).to(device, non_blocking=True)
    if card.input.channels == 3:
        batch = batch.expand(-1, 3, -1, -1)
    if device.type == "cuda":  # tensor cores: half precision where safe, NHWC memory layout
        batch = batch.contiguous(memory_format=torch.channels_last)
        logits, cams = half_precision_forward(network, batch)
    else:
        logits, cams = forward_with_cam(network, batch)
    probabilities = torch.sigmoid(logits).float().cpu().numpy()
    heatmaps = cams.to(torch.float16).cpu().numpy()
    labels = card.label_names
    return [
        Prediction(
            scores={label: round(float(p), 6) for label, p in zip(labels, row, strict=True)},
            model=card.info,
            heatmaps=heatmaps[i],
        )
        for i, row in enumerate(probabilities)
    ]
