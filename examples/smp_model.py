"""A segmentation_models.pytorch U-Net for ``autoloss search --model smp_model:build``.

``build(num_classes=C)`` returns an ``smp.Unet`` (ResNet-18 encoder, random init:
``encoder_weights=None``, so nothing downloads) that takes images of any size: U-Net needs
sides divisible by 32, so the input is padded (edge pixels repeated) up to the next multiple
and the logits are cropped back. Output: logits [N, C, H, W].

    cd examples && autoloss search --model smp_model:build --dataset synthetic ...
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F


class PadToMultiple(nn.Module):
    """Runs ``net`` on the input padded to sides divisible by ``multiple`` and crops its
    output back: [N, 3, H, W] -> [N, C, H, W]."""

    def __init__(self, net: nn.Module, *, multiple: int = 32) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.net(x)[..., :h, :w]


def build(num_classes: int, *, encoder_name: str = "resnet18") -> nn.Module:
    """An ``smp.Unet`` with ``num_classes`` output classes and random weights."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    net = smp.Unet(encoder_name=encoder_name, encoder_weights=None, in_channels=3,
                   classes=num_classes)
    return PadToMultiple(net)
