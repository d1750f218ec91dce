"""NPL networks: the patch classifier (a torchvision backbone on ImageNet-normalised patches)."""

from __future__ import annotations

import logging

import torch
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
torchvision, _ = optional_import("torchvision", descriptor="Please install torchvision before using the MobileNetV2.")

__all__ = ["PatchClassifier", "mobilenet_v2_classifier"]

logger = logging.getLogger(__name__)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchClassifier(torch.nn.Module):
    """A torchvision classifier on ``(B, 3, H, W)`` images in [0, 1], normalised with the ImageNet statistics.

    With ``freeze_features`` the convolutional part (``backbone.features``) is frozen: no gradients and
    batch-norm statistics kept (evaluation mode even while training), as in the paper's fine-tuning.
    """

    def __init__(self, backbone: torch.nn.Module, freeze_features: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.freeze_features = bool(freeze_features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.freeze_features:
            features = getattr(backbone, "features", None)
            if features is None:
                raise ValueError(f"freeze_features needs a backbone with .features, got {type(backbone).__name__}")
            for p in features.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> PatchClassifier:
        super().train(mode)
        if self.freeze_features:
            self.backbone.features.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def mobilenet_v2_classifier(
    num_classes: int,
    weights: str | None = None,
    weights_path: str | None = None,
    freeze_features: bool = False,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> PatchClassifier:
    """The paper's patch classifier: torchvision MobileNetV2 with a ``num_classes`` head.

    Default: random initialisation (``weights=None``; nothing is downloaded). The paper fine-tuned
    ImageNet weights with the convolutional layers frozen; with weights available, pass
    ``weights="IMAGENET1K_V1"`` (torchvision downloads them once into its cache) or ``weights_path`` (a
    ``state_dict`` file of ``torchvision.models.mobilenet_v2``) together with ``freeze_features=True``.

    Args:
        num_classes: C (datalist ``classes``).
        weights: a torchvision weights name, e.g. ``"IMAGENET1K_V1"``.
        weights_path: local ``.pth`` state dict of an ImageNet MobileNetV2 (its 1000-class head is dropped).
        freeze_features: freeze the convolutional layers.
        width_mult: MobileNetV2 width multiplier (pretrained weights exist for 1.0 only).
        dropout: dropout before the head.
    """
    if weights is not None and weights_path is not None:
        raise ValueError("pass weights (torchvision name) or weights_path (local file), not both")
    pretrained = weights is not None or weights_path is not None
    if pretrained and width_mult != 1.0:
        raise ValueError(f"ImageNet MobileNetV2 weights exist for width_mult=1.0, got {width_mult}")
    net = torchvision.models.mobilenet_v2(weights=weights, width_mult=width_mult, dropout=dropout)
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net.classifier[-1] = torch.nn.Linear(net.last_channel, int(num_classes))
    if freeze_features and not pretrained:
        logger.warning("freeze_features=True with random weights: only the head will learn")
    return PatchClassifier(net, freeze_features=freeze_features)
