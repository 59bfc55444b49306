"""Hand-designed segmentation losses the paper compares against (Auto Seg-Loss, Table 1).

Every loss is an :class:`torch.nn.Module` called as ``loss(logits, target)`` with

- ``logits``: float tensor ``[N, C, h, w]`` (any float dtype; the math runs in float32 with
  autocast disabled, so it is safe under ``torch.autocast(..., dtype=torch.bfloat16)``);
- ``target``: integer tensor ``[N, H, W]``; pixels equal to ``ignore_index`` (default 255)
  never count. If ``(h, w) != (H, W)`` the logits are resized bilinearly
  (``align_corners=False``) to the label size first.

It returns a float32 scalar. On a batch where every pixel is ignored the loss is exactly 0
with a finite (zero) gradient, never NaN. Statistics are pooled over the whole batch.

Losses (``BASELINES`` / :func:`make_loss` names in brackets):

- [``ce``] :class:`CrossEntropyLoss`: mean of ``-log softmax(logits)[target]`` over valid
  pixels.
- [``wce``] :class:`WeightedCrossEntropyLoss`: class-weighted CE, normalised as PyTorch does
  (``sum w[y] * nll / sum w[y]`` over valid pixels). Weights from a dataset's labels with
  :func:`class_frequency_weights` (ENet's ``1 / ln(1.02 + p_c)`` or SegNet's median-frequency
  balancing).
- [``dpce``] :class:`DPCELoss`: distance-penalised CE (after Caliva et al., 2019, "Distance map
  loss penalty term for semantic segmentation"): per-pixel weight
  ``w = 1 + alpha * exp(-d / sigma)`` where ``d`` is the Euclidean distance (pixels) of the
  pixel to the nearest boundary of the *target* label map (scipy's exact EDT), so pixels on a
  boundary weigh ``1 + alpha`` and far-away pixels weigh ~1. Loss = mean over valid pixels of
  ``w * nll``. (Caliva et al. use ``1 + Phi`` with ``Phi`` an inverted, normalised distance map;
  the exponential keeps the weights independent of the image size.)
- [``ssim``] :class:`SSIMLoss`: ``1 - mean SSIM`` between softmax probabilities and the one-hot
  target, per class, 11x11 Gaussian window (sigma 1.5), ``C1 = 0.01^2``, ``C2 = 0.03^2``
  (data range 1), replicate padding; averaged over all classes and valid pixels.
- [``dice``] :class:`DiceLoss`: ``1 - mean_c (2 sum_i p_ic y_ic + eps) / (sum_i p_ic +
  sum_i y_ic + eps)`` (linear denominator, V-Net's squared variant is *not* used), sums over
  valid pixels of the whole batch, mean over the classes present in the target or in the
  argmax prediction (valid pixels), ``eps = 1``.
- [``lovasz``] :class:`LovaszSoftmaxLoss`: Lovasz-softmax (Berman et al., CVPR 2018), the
  Lovasz extension of the Jaccard loss on the errors ``|y_c - p_c|``, pooled over the batch
  (``per_image=False``), averaged over the classes present in the target (``classes="present"``).

Boundary convention (DPCE) is the one of :mod:`autoloss_ray.metrics`: a valid pixel is on the
boundary iff a pixel of its 3x3 neighbourhood *inside the image* carries another value
(another class or the ignore value); the image border is not a boundary.

Modules (everything public is re-exported here): :mod:`._base` (the shared front end),
:mod:`.ce` (CE, weighted CE and the class weights), :mod:`.dpce`, :mod:`.ssim`, :mod:`.dice`,
:mod:`.lovasz`, :mod:`.registry` (:data:`BASELINES`, :func:`make_loss`).
"""

from __future__ import annotations

from autoloss_ray.losses.baselines.ce import (
    CrossEntropyLoss,
    WeightedCrossEntropyLoss,
    class_frequency_weights,
    cross_entropy,
)
from autoloss_ray.losses.baselines.dice import DiceLoss
from autoloss_ray.losses.baselines.dpce import DPCELoss, boundary_distance, dpce_weights
from autoloss_ray.losses.baselines.lovasz import LovaszSoftmaxLoss
from autoloss_ray.losses.baselines.registry import BASELINES, make_loss
from autoloss_ray.losses.baselines.ssim import SSIMLoss

__all__ = [
    "BASELINES",
    "make_loss",
    "cross_entropy",
    "class_frequency_weights",
    "boundary_distance",
    "dpce_weights",
    "CrossEntropyLoss",
    "WeightedCrossEntropyLoss",
    "DPCELoss",
    "SSIMLoss",
    "DiceLoss",
    "LovaszSoftmaxLoss",
]
