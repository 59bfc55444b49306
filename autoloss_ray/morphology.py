"""Binary and soft morphology on [N, C, H, W] maps, shared by the exact metrics and the surrogates.

Conventions (the boundary of docs/paper.md#the-exact-metrics):
- erosion treats everything outside the image as *inside* the mask, so the image border is
  never a boundary;
- dilation treats everything outside the image as 0.

Every function accepts bool or floating tensors and works on soft maps in [0, 1] as well as on
binary ones (max / min pooling), on whatever device the input lives on. Bool maps take exact
shortcuts (separable AND / OR of shifted slices, several times cheaper than float pooling;
tested equal to the pooling of the same map as floats).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["erode3x3", "dilate", "boundaries", "one_hot_masks"]


def _check_4d(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a 4-d tensor [N, C, H, W], got shape {tuple(x.shape)}")


def _as_float(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    _check_4d(x)
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
    if x.dtype == torch.bool:
        _check_4d(x)
        return _dilate_bool(x, radius)
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
        _check_4d(masks)
        return _boundaries_bool(masks)
    return masks - erode3x3(masks)


def one_hot_masks(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels [N, H, W] integer -> bool [N, C, H, W]; values outside [0, C) give all-False."""
    if labels.dim() != 3:
        raise ValueError(f"expected labels of shape [N, H, W], got {tuple(labels.shape)}")
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)
    return labels.unsqueeze(1) == classes


# --- exact bool shortcuts ------------------------------------------------------------------


def _boundaries_bool(x: torch.Tensor) -> torch.Tensor:
    """x & ~erode3x3(x) for a bool [N, C, H, W] map (outside counts as inside), by a
    separable AND of shifted slices (exact; no float min-pooling)."""
    e = x.clone()
    e[:, :, 1:] &= x[:, :, :-1]
    e[:, :, :-1] &= x[:, :, 1:]
    v = e
    e = v.clone()
    e[:, :, :, 1:] &= v[:, :, :, :-1]
    e[:, :, :, :-1] &= v[:, :, :, 1:]
    return x & ~e


def _dilate_bool(x: torch.Tensor, r: int) -> torch.Tensor:
    """dilate(x, r) for a bool [N, C, H, W] map (outside = 0): a separable OR of shifted
    slices of the input (exactly the (2r+1)^2 max, ~10x cheaper than float max-pooling with a
    large kernel)."""
    if r <= 0:
        return x
    out = x.clone()
    for s in range(1, min(r, x.shape[2] - 1) + 1):
        out[:, :, s:] |= x[:, :, :-s]
        out[:, :, :-s] |= x[:, :, s:]
    v = out
    out = v.clone()
    for s in range(1, min(r, x.shape[3] - 1) + 1):
        out[:, :, :, s:] |= v[:, :, :, :-s]
        out[:, :, :, :-s] |= v[:, :, :, s:]
    return out
