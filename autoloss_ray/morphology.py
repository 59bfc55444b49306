"""Binary and soft morphology on [N, C, H, W] maps, shared by the exact metrics and the surrogates.

Conventions (DESIGN section 2):
- erosion treats everything outside the image as *inside* the mask, so the image border is
  never a boundary;
- dilation treats everything outside the image as 0.

Every function accepts bool or floating tensors and works on soft maps in [0, 1] as well as on
binary ones (max / min pooling), on whatever device the input lives on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["erode3x3", "dilate", "boundaries", "one_hot_masks"]


def _as_float(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    if x.dim() != 4:
        raise ValueError(f"expected a 4-d tensor [N, C, H, W], got shape {tuple(x.shape)}")
    dtype = x.dtype
    if dtype == torch.bool or not dtype.is_floating_point:
        return x.to(torch.float32), dtype
    return x, dtype


def erode3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 min-pool, outside the image counts as inside (= neutral for min).

    x: [N, C, H, W] bool or float. Returns the same shape and dtype.
    """
    xf, dtype = _as_float(x)
    # max_pool2d pads with -inf, so -maxpool(-x) pads with +inf: the border is neutral.
    out = -F.max_pool2d(-xf, kernel_size=3, stride=1, padding=1)
    return out.to(dtype) if dtype != xf.dtype else out


def dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(2r+1)x(2r+1) square max-pool, outside the image counts as 0.

    x: [N, C, H, W] bool or float with values >= 0. radius >= 0. Returns the same shape/dtype.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if radius == 0:
        return x
    xf, dtype = _as_float(x)
    # max_pool2d pads with -inf, which for values >= 0 is the same as padding with 0; the
    # kernel may be larger than the image, so pool separably along each axis in chunks.
    k = 2 * radius + 1
    out = F.max_pool2d(xf, kernel_size=(k, 1), stride=1, padding=(radius, 0))
    out = F.max_pool2d(out, kernel_size=(1, k), stride=1, padding=(0, radius))
    return out.to(dtype) if dtype != xf.dtype else out


def boundaries(masks: torch.Tensor) -> torch.Tensor:
    """Inner boundary of each mask: mask AND NOT erode3x3(mask).

    masks: [N, C, H, W] bool (or soft float; then mask - erode(mask), which is >= 0).
    Returns the same shape/dtype.
    """
    if masks.dtype == torch.bool:
        return masks & ~erode3x3(masks)
    return masks - erode3x3(masks)


def one_hot_masks(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels [N, H, W] integer -> bool [N, C, H, W]; values outside [0, C) give all-False."""
    if labels.dim() != 3:
        raise ValueError(f"expected labels of shape [N, H, W], got {tuple(labels.shape)}")
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)
    return labels.unsqueeze(1) == classes
