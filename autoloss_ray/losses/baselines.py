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
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from autoloss_ray.morphology import boundaries, one_hot_masks

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

WEIGHT_METHODS = ("inverse_log", "median_frequency")

# ---------------------------------------------------------------------------------------------
# validation and preparation
# ---------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: Any, *, allow_none: bool = True) -> int | None:
    if num_classes is None and allow_none:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _check_ignore_index(ignore_index: Any) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    return int(ignore_index)


def _no_autocast(device: torch.device):
    """A context that disables autocast on ``device`` (a no-op where autocast is unknown)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # pragma: no cover - exotic device types
        return contextlib.nullcontext()


def _prepare(
    logits: Any, target: Any, num_classes: int | None, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate, resize and cast. Returns (logits float32 [N,C,H,W], safe target [N,H,W] int64
    with ignored pixels set to 0, valid mask bool [N,H,W])."""
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(
            "logits must be a floating-point torch tensor [N, C, h, w], got "
            + (str(logits.dtype) if isinstance(logits, torch.Tensor) else type(logits).__name__)
        )
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape [N, C, h, w], got {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"target must be an integer torch tensor [N, H, W], got {type(target).__name__}"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class labels, got dtype {target.dtype}")
    if target.dim() != 3:
        raise ValueError(f"target must have shape [N, H, W], got {tuple(target.shape)}")
    if logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"logits and target disagree on the batch size: logits {tuple(logits.shape)}, "
            f"target {tuple(target.shape)}"
        )
    c = logits.shape[1]
    if num_classes is not None and c != num_classes:
        raise ValueError(
            f"logits have {c} channels but the loss was built for num_classes={num_classes}"
        )
    if target.device != logits.device:
        raise ValueError(
            f"logits and target must be on the same device, got {logits.device} and {target.device}"
        )
    target = target.long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= c))
    if bool(bad.any()):
        values = torch.unique(target[bad])[:5].tolist()
        raise ValueError(
            f"target holds labels outside [0, {c}) that are not ignore_index={ignore_index}: "
            f"{values}"
        )
    logits = logits.float()
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(
            logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False
        )
    safe = torch.where(valid, target, torch.zeros_like(target))
    return logits, safe, valid


class _Baseline(nn.Module):
    """Shared front end: validation, resize, float32 without autocast, ignore mask."""

    def __init__(self, *, num_classes: int | None = None, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits [N, C, h, w] float, target [N, H, W] int -> float32 scalar."""
        device = logits.device if isinstance(logits, torch.Tensor) else torch.device("cpu")
        with _no_autocast(device):
            x, safe, valid = _prepare(logits, target, self.num_classes, self.ignore_index)
            return self._loss(x, safe, valid)

    def _loss(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """logits float32 [N,C,H,W], target [N,H,W] (ignored set to 0), valid bool [N,H,W]."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"


def _nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``-log softmax(logits)[target]``: [N,C,H,W], [N,H,W] -> [N,H,W]."""
    return F.cross_entropy(logits, target, reduction="none")


# ---------------------------------------------------------------------------------------------
# cross entropy and weighted cross entropy
# ---------------------------------------------------------------------------------------------


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = 255,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Weighted) cross entropy over valid pixels; 0 on an all-ignored batch.

    logits [N, C, h, w], target [N, H, W]. Without ``weight``: mean over valid pixels. With
    ``weight`` [C]: ``sum w[y] nll / sum w[y]`` (PyTorch's ``reduction="mean"``).
    """
    if weight is None:
        return CrossEntropyLoss(ignore_index=ignore_index)(logits, target)
    return WeightedCrossEntropyLoss(weight, ignore_index=ignore_index)(logits, target)


class CrossEntropyLoss(_Baseline):
    """Mean of ``-log softmax(logits)[target]`` over valid pixels (0 if none)."""

    def _loss(self, logits, target, valid):
        nll = _nll(logits, target)
        v = valid.to(nll.dtype)
        return (nll * v).sum() / v.sum().clamp_min(1.0)


def _weight_tensor(weight: Any, num_classes: int | None) -> torch.Tensor:
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().numpy()
    w = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    if w.dim() != 1 or w.numel() == 0:
        raise ValueError(
            f"weight must be a 1-d sequence with one entry per class, got shape {tuple(w.shape)}"
        )
    if num_classes is not None and w.numel() != num_classes:
        raise ValueError(f"weight has {w.numel()} entries but num_classes={num_classes}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weight must be finite and >= 0, got {w.tolist()}")
    return w.float()


class WeightedCrossEntropyLoss(_Baseline):
    """Class-weighted cross entropy: ``sum_i w[y_i] nll_i / sum_i w[y_i]`` over valid pixels.

    weight: [C] non-negative class weights, e.g. from :func:`class_frequency_weights`.
    Returns 0 when there is no valid pixel or every valid pixel has weight 0.
    """

    def __init__(
        self, weight: Any = None, *, num_classes: int | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        if weight is None:
            raise ValueError(
                "weighted cross entropy needs class weights: compute them from the training "
                "labels with autoloss_ray.baselines.class_frequency_weights(labels, num_classes, "
                "ignore_index=...) and pass weight=<those weights>"
            )
        w = _weight_tensor(weight, self.num_classes)
        if self.num_classes is None:
            self.num_classes = int(w.numel())
        self.register_buffer("weight", w)

    def _loss(self, logits, target, valid):
        nll = _nll(logits, target)
        w = self.weight.to(device=logits.device, dtype=nll.dtype)[target] * valid.to(nll.dtype)
        return (w * nll).sum() / w.sum().clamp_min(torch.finfo(nll.dtype).tiny)


def _label_array(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer label maps, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"each labels item must be [H, W] or [N, H, W], got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def class_frequency_weights(
    labels: Iterable[Any],
    num_classes: int,
    ignore_index: int = 255,
    *,
    method: str = "inverse_log",
    c: float = 1.02,
) -> torch.Tensor:
    """Class weights from a dataset's label maps, for :class:`WeightedCrossEntropyLoss`.

    labels: an iterable of integer label maps ``[H, W]`` or batches ``[N, H, W]`` (torch or
    numpy); pixels equal to ``ignore_index`` are not counted. Returns float32 ``[C]``.

    - ``method="inverse_log"`` (ENet, Paszke et al. 2016): ``w_c = 1 / ln(c + p_c)`` with
      ``p_c`` the fraction of valid pixels of class c and ``c = 1.02``; weights lie in
      ``(1/ln(2.02), 1/ln(1.02)] = (1.42, 50.5]``; a class never seen gets ``1/ln(c)``.
    - ``method="median_frequency"`` (Eigen & Fergus 2015, SegNet): ``freq_c = count_c /
      (valid pixels of the images where c appears)``, ``w_c = median(freq) / freq_c`` (median
      over the classes that appear); a class never seen gets the largest seen weight.
    """
    num_classes = _check_num_classes(num_classes, allow_none=False)
    ignore_index = _check_ignore_index(ignore_index)
    if method not in WEIGHT_METHODS:
        raise ValueError(f"method must be one of {WEIGHT_METHODS}, got {method!r}")
    if not (isinstance(c, numbers.Real) and c > 1.0):
        raise ValueError(f"c must be a number > 1 (ENet uses 1.02), got {c!r}")
    counts = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)  # valid pixels of images containing c
    for item in labels:
        arr = _label_array(item)
        for img in arr:
            v = img[img != ignore_index]
            if v.size and (v.min() < 0 or v.max() >= num_classes):
                bad = np.unique(v[(v < 0) | (v >= num_classes)])[:5].tolist()
                raise ValueError(
                    f"labels hold values outside [0, {num_classes}) that are not "
                    f"ignore_index={ignore_index}: {bad}"
                )
            cnt = np.bincount(v, minlength=num_classes)
            counts += cnt
            image_pixels[cnt > 0] += v.size
    total = counts.sum()
    if total == 0:
        raise ValueError("class_frequency_weights got no valid (non-ignored) label pixel at all")
    if method == "inverse_log":
        w = 1.0 / np.log(c + counts / total)
    else:
        seen = counts > 0
        freq = np.zeros(num_classes)
        freq[seen] = counts[seen] / image_pixels[seen]
        w = np.zeros(num_classes)
        w[seen] = np.median(freq[seen]) / freq[seen]
        w[~seen] = w[seen].max()
    return torch.as_tensor(w, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# DPCE
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def boundary_distance(
    target: torch.Tensor, num_classes: int, *, ignore_index: int = 255
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
    ignore_index: int = 255,
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
        ignore_index: int = 255,
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


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


class SSIMLoss(_Baseline):
    """``1 - SSIM`` between ``softmax(logits)`` and the one-hot target, per class.

    SSIM map per class with a ``window x window`` Gaussian (default 11, sigma 1.5; separable,
    replicate padding, i.e. scipy's ``mode="nearest"``), ``C1 = 0.01^2``, ``C2 = 0.03^2``.
    Ignored pixels are zeroed in both the probabilities and the one-hot target before
    filtering; the loss is
    ``sum_{valid i, c} (1 - ssim_ic) / (C * #valid)``.
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        ignore_index: int = 255,
        window_size: int = 11,
        sigma: float = 1.5,
        c1: float = 0.01**2,
        c2: float = 0.03**2,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        if not isinstance(window_size, numbers.Integral) or window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"window_size must be an odd int >= 1, got {window_size!r}")
        if not (isinstance(sigma, numbers.Real) and sigma > 0):
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.window_size, self.sigma = int(window_size), float(sigma)
        self.c1, self.c2 = float(c1), float(c2)
        kernel = _gaussian_kernel(self.window_size, self.sigma)
        self.register_buffer("kernel", kernel, persistent=False)

    def _band(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """[n, n] matrix M with (M @ v) = 1-d Gaussian filter of v with replicate padding."""
        r = self.window_size // 2
        k = self.kernel.to(device=like.device, dtype=like.dtype)
        idx = torch.arange(n, device=like.device).unsqueeze(1) + torch.arange(
            -r, r + 1, device=like.device
        )
        m = torch.zeros(n, n, device=like.device, dtype=like.dtype)
        return m.scatter_add_(1, idx.clamp_(0, n - 1), k.expand(n, -1).contiguous())

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian filter of every map of x [B, H, W] with replicate padding.

        Done as two banded matrix products (``A @ x @ B^T``, the padding folded into the
        bands): exact, and on CPU an order of magnitude faster than single-channel conv2d.
        """
        return self._band(x.shape[-2], x) @ x @ self._band(x.shape[-1], x).T

    def _loss(self, logits, target, valid):
        n, c, h, w = logits.shape
        v = valid.unsqueeze(1).to(logits.dtype)
        p = torch.softmax(logits, dim=1) * v
        y = F.one_hot(target, c).permute(0, 3, 1, 2).to(p.dtype) * v
        stack = torch.stack([p, y, p * p, y * y, p * y], dim=0).reshape(5 * n * c, h, w)
        mu_p, mu_y, pp, yy, py = self._filter(stack).reshape(5, n, c, h, w)
        var_p = pp - mu_p * mu_p
        var_y = yy - mu_y * mu_y
        cov = py - mu_p * mu_y
        ssim = ((2 * mu_p * mu_y + self.c1) * (2 * cov + self.c2)) / (
            (mu_p * mu_p + mu_y * mu_y + self.c1) * (var_p + var_y + self.c2)
        )
        return ((1.0 - ssim) * v).sum() / (c * valid.sum().clamp_min(1).to(ssim.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window_size={self.window_size}, sigma={self.sigma}"


# ---------------------------------------------------------------------------------------------
# Dice
# ---------------------------------------------------------------------------------------------


class DiceLoss(_Baseline):
    """Soft Dice: ``1 - mean_c (2 sum p_c y_c + eps) / (sum p_c + sum y_c + eps)``.

    Sums over the valid pixels of the whole batch; p = softmax(logits), y = one-hot target;
    linear (not squared) denominator; the mean runs over the classes present in the target or
    in the argmax prediction at valid pixels (a mask without gradient); ``eps = 1``.
    """

    def __init__(
        self, *, num_classes: int | None = None, ignore_index: int = 255, eps: float = 1.0
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


# ---------------------------------------------------------------------------------------------
# Lovasz-softmax
# ---------------------------------------------------------------------------------------------


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss, row-wise.

    fg_sorted [K, P] (0/1 ground truth sorted by decreasing error) -> [K, P]."""
    gts = fg_sorted.sum(dim=1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(dim=1)
    union = gts + (1.0 - fg_sorted).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


class LovaszSoftmaxLoss(_Baseline):
    """Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018).

    For each class c present in the (valid) target: errors ``e_i = |y_ic - p_ic|`` over all
    valid pixels of the batch, sorted decreasingly; loss_c = ``<e_sorted, grad Delta_J>`` with
    the Jaccard-loss increments of the sorted prefixes; the loss is the mean over present
    classes (0 if none). ``classes="present"``, ``per_image=False``.
    """

    def _loss(self, logits, target, valid):
        c = logits.shape[1]
        p = torch.softmax(logits, dim=1).permute(1, 0, 2, 3).reshape(c, -1)  # [C, NHW]
        flat_valid = valid.reshape(-1)
        labels = target.reshape(-1)[flat_valid]
        if labels.numel() == 0:
            return p.sum() * 0.0
        present = torch.bincount(labels, minlength=c)[:c].nonzero().squeeze(1)
        p = p[:, flat_valid][present]  # [K, P]
        fg = (labels.unsqueeze(0) == present.unsqueeze(1)).to(p.dtype)
        errors = (fg - p).abs()
        errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
        grad = _lovasz_grad(torch.gather(fg, 1, perm))
        return (errors_sorted * grad).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

BASELINES: dict[str, type[_Baseline]] = {
    "ce": CrossEntropyLoss,
    "wce": WeightedCrossEntropyLoss,
    "dpce": DPCELoss,
    "ssim": SSIMLoss,
    "dice": DiceLoss,
    "lovasz": LovaszSoftmaxLoss,
}


def make_loss(name: str, *, num_classes: int, ignore_index: int = 255, **kw: Any) -> nn.Module:
    """Build the baseline loss ``name`` (one of :data:`BASELINES`).

    ``kw`` goes to the class (e.g. ``weight=`` for ``"wce"``, ``alpha=``/``sigma=`` for
    ``"dpce"``, ``eps=`` for ``"dice"``).
    """
    if not isinstance(name, str) or name.lower() not in BASELINES:
        raise ValueError(f"unknown baseline loss {name!r}; valid names: {sorted(BASELINES)}")
    cls = BASELINES[name.lower()]
    try:
        return cls(num_classes=num_classes, ignore_index=ignore_index, **kw)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"baseline {name!r} got an unsupported option: {exc}") from exc
        raise
