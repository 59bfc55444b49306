"""Soft Dice loss."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from autoloss_ray.losses.baselines._base import _Baseline
from autoloss_ray.vocabulary import IGNORE_INDEX

__all__ = ["DiceLoss"]


class DiceLoss(_Baseline):
    """Soft Dice: ``1 - mean_c (2 sum p_c y_c + eps) / (sum p_c + sum y_c + eps)``.

    Sums over the valid pixels of the whole batch; p = softmax(logits), y = one-hot target;
    linear (not squared) denominator; the mean runs over the classes present in the target or
    in the argmax prediction at valid pixels (a mask without gradient); ``eps = 1``.
    """

    def __init__(
        self, *, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX, eps: float = 1.0
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        if not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def _loss(self, logits, target, valid):
        c = logits.shape[1]
        v = valid.unsqueeze(1).to(logits.dtype)
        p = torch.softmax(logits, dim=1) * v
        y = F.one_hot(target, c).permute(0, 3, 1, 2).to(p.dtype) * v
        inter = (p * y).sum(dim=(0, 2, 3))
        denom = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3))
        dice = (2 * inter + self.eps) / (denom + self.eps)
        with torch.no_grad():
            pred = logits.argmax(dim=1)
            present = (y.sum(dim=(0, 2, 3)) > 0) | (
                torch.bincount(pred[valid], minlength=c)[:c] > 0
            )
            present = present.to(dice.dtype)
        return ((1.0 - dice) * present).sum() / present.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
