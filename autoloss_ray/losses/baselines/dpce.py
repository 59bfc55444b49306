"""Distance-penalised cross entropy (DPCE) and its boundary-distance weights."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from autoloss_ray.losses.baselines._base import _Baseline, _nll
from autoloss_ray.morphology import boundaries, one_hot_masks
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["boundary_distance", "dpce_weights", "DPCELoss"]


@torch.no_grad()
def boundary_distance(
    target: torch.Tensor, num_classes: int, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Euclidean distance of every pixel to the nearest target boundary pixel.

    target [N, H, W] int -> float32 [N, H, W] on target's device (``inf`` in an image without
    any boundary; 0 on boundary pixels). Boundary: a valid pixel of class c with a 3x3
    neighbour inside the image that is not c (another class or ignored). Distances are
    measured to boundary pixels across ignored regions too; they are only *used* at valid
    pixels. Exact EDT from ``scipy.ndimage.distance_transform_edt`` (runs on the CPU).
    """
    from scipy.ndimage import distance_transform_edt

    target = target.long()
    valid = target != ignore_index
    masks = one_hot_masks(target, num_classes) & valid.unsqueeze(1)
    edge = boundaries(masks).any(dim=1).cpu().numpy()  # [N, H, W] bool
    out = np.full(edge.shape, np.inf, dtype=np.float32)
    for i, e in enumerate(edge):
        if e.any():
            out[i] = distance_transform_edt(~e)
    return torch.from_numpy(out).to(target.device)


@torch.no_grad()
def dpce_weights(
    target: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
    alpha: float = 1.0,
    sigma: float = 5.0,
) -> torch.Tensor:
    """Per-pixel DPCE weights ``1 + alpha * exp(-d / sigma)`` (0 at ignored pixels).

    target [N, H, W] -> float32 [N, H, W]; d from :func:`boundary_distance`.
    """
    d = boundary_distance(target, num_classes, ignore_index=ignore_index)
    w = 1.0 + alpha * torch.exp(-d / sigma)
    return torch.where(target != ignore_index, w, torch.zeros_like(w))


class DPCELoss(_Baseline):
    """Distance-penalised cross entropy: mean over valid pixels of ``w_i * nll_i`` with
    ``w_i = 1 + alpha * exp(-d_i / sigma)``, d_i the distance (pixels) to the nearest boundary
    of the target (see :func:`boundary_distance`). Weights are computed without gradient."""

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        alpha: float = 1.0,
        sigma: float = 5.0,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        if not (isinstance(alpha, numbers.Real) and math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        self.alpha, self.sigma = float(alpha), float(sigma)

    def _loss(self, logits, target, valid):
        nll = _nll(logits, target)
        labels = torch.where(valid, target, torch.full_like(target, -1))
        w = dpce_weights(
            labels, logits.shape[1], ignore_index=-1, alpha=self.alpha, sigma=self.sigma
        )
        return (w * nll).sum() / valid.sum().clamp_min(1).to(nll.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, sigma={self.sigma}"
