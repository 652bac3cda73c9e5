"""Class activation maps (CAM, Zhou et al. 2016) computed in the same forward pass as the scores.

For networks that end in global average pooling + one linear layer (DenseNet, ResNet), the logit of
label c is the mean over positions of CAM_c = W_c · F(x, y) + b_c, so the map costs one einsum on the
last feature map. "Performance": no second pass and no gradients (unlike Grad-CAM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import DenseNet, ResNet

from qure_ray.errors import ModelError


def _features_and_head(network: nn.Module, batch: Tensor) -> tuple[Tensor, nn.Linear]:
    if isinstance(network, DenseNet):
        return F.relu(network.features(batch)), network.classifier
    if isinstance(network, ResNet):
        x = network.maxpool(network.relu(network.bn1(network.conv1(batch))))
        x = network.layer4(network.layer3(network.layer2(network.layer1(x))))
        return x, network.fc
    raise ModelError(f"class activation maps need a DenseNet or ResNet, not {type(network).__name__}")


def forward_with_cam(network: nn.Module, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (B, L) and heatmaps (B, L, h, w) scaled to [0, 1] per image and label. The head runs in float32
    even under fp16 autocast: thresholds are fitted to 4 decimals in float32, and fp16 logits resolve a score
    near 0.5 only to about 5e-4, so a borderline image could flip between a CPU and a GPU replica."""
    feature_map, head = _features_and_head(network, batch)
    with torch.autocast(batch.device.type, enabled=False):
        feature_map = feature_map.float()
        logits = head(feature_map.mean(dim=(2, 3)))
        cams = torch.einsum("lk,bkhw->blhw", head.weight, feature_map) + head.bias[None, :, None, None]
    cams = cams - cams.amin(dim=(2, 3), keepdim=True)
    cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return logits, cams
