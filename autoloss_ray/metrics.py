"""Exact (non-differentiable) segmentation metrics, accumulated over a whole dataset.

DESIGN section 2. Six metrics (:data:`METRICS`): mIoU, FWIoU, boundary IoU (trimap IoU),
boundary F1, mean accuracy and global accuracy. Everything is summed over the dataset first
(confusion matrices and boundary counts) and turned into ratios last; nothing is averaged per
image. A class whose denominator is 0 is left out of a mean; a mean over an empty class set
(e.g. every pixel ignored, or no boundary anywhere for BIoU/BF1) is ``float("nan")``.

Conventions
-----------
- ``ignore_index``: pixels whose *target* equals it never count anywhere. The ignore value is
  not a class: it has no boundary in the target, and if it lies inside ``[0, C)`` that class is
  left out of every mean (as torchmetrics does). ``pred`` may hold the ignore value only at
  pixels whose target is ignored.
- Boundary of class c in a label map L: ``B_c = (L == c) & ~erode3x3(L == c)`` with the image
  border counting as inside (:func:`autoloss_ray.morphology.erode3x3`); the union over classes
  is computed on the label map itself with the same ``erode3x3`` (a pixel is on the boundary
  of its own class iff a 3x3 neighbour inside the image carries another value).
- Tolerance: ``(2r+1) x (2r+1)`` square dilation, outside the image = 0. The per-class
  dilations of BF1 are done on bit-packed class sets (OR over the square window, separable,
  with log-doubling) so that all classes cost a few integer ops; this equals
  :func:`autoloss_ray.morphology.dilate` of every class map exactly (tested).
- BF1: boundaries and dilations are computed on the full label maps; only the counting of
  ``n_p, n_g, m_p, m_g`` is restricted to valid pixels (target != ignore).
- ``boundary_classes``: ``"all"`` (default) builds the BIoU band from the boundaries of every
  class and averages BF1 over every class; ``"foreground"`` leaves the class
  ``background_index`` (default 0) out of both, as the official release's VOC evaluation does
  (``drop_bg``): band = D_r(union_{c != bg} B_c(target)), BF1 mean over c != bg.

Inputs are torch tensors (any device; the work runs there) or numpy arrays, integer (or bool)
label maps of shape [N, H, W] or [H, W].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autoloss_ray.morphology import erode3x3

__all__ = [
    "METRICS",
    "BOUNDARY_CLASSES",
    "evaluate",
    "MetricAccumulator",
    "check_labels",
    "check_boundary_classes",
    "confusion_matrix",
    "boundary_band",
    "bf1_counts",
    "scores_from_stats",
    "parse_metric",
    "reward",
]

METRICS: tuple[str, ...] = ("miou", "fwiou", "biou", "bf1", "macc", "gacc")
BOUNDARY_CLASSES: tuple[str, ...] = ("all", "foreground")

# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _check_ignore_index(ignore_index: Any) -> int | None:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    return int(ignore_index)


def _check_tolerance(tolerance: Any) -> int:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Integral):
        raise TypeError(f"boundary_tolerance must be an int >= 0 (pixels), got {tolerance!r}")
    if tolerance < 0:
        raise ValueError(f"boundary_tolerance must be >= 0 pixels, got {tolerance}")
    return int(tolerance)


def check_boundary_classes(
    boundary_classes: Any, background_index: Any, num_classes: int
) -> int | None:
    """Validate ``boundary_classes`` / ``background_index``; return the class the boundary
    metrics leave out (``background_index`` for ``"foreground"``), or None (``"all"``)."""
    num_classes = _check_num_classes(num_classes)
    if not isinstance(boundary_classes, str) or boundary_classes not in BOUNDARY_CLASSES:
        raise ValueError(
            f"boundary_classes must be one of {', '.join(map(repr, BOUNDARY_CLASSES))}, "
            f"got {boundary_classes!r}"
        )
    if isinstance(background_index, bool) or not isinstance(background_index, numbers.Integral):
        raise TypeError(f"background_index must be an int class index, got {background_index!r}")
    if not 0 <= background_index < num_classes:
        raise ValueError(
            f"background_index must be a class in 0..{num_classes - 1}, got {background_index}"
        )
    return int(background_index) if boundary_classes == "foreground" else None


def _as_tensor(x: Any, name: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
            t = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64, copy=False))
        else:
            raise TypeError(
                f"{name} must hold integer class labels, got a numpy array of dtype {x.dtype}"
            )
    elif isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(
                f"{name} must hold integer class labels, got a tensor of dtype {x.dtype} "
                "(take the argmax of the logits first)"
            )
        t = x
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray of integer labels, "
            f"got {type(x).__name__}"
        )
    if device is not None and t.device != device:
        t = t.to(device)
    return t.to(torch.int64)


def _describe_values(values: torch.Tensor, limit: int = 5) -> str:
    uniq = torch.unique(values)
    shown = ", ".join(str(int(v)) for v in uniq[:limit].tolist())
    return shown + (", ..." if uniq.numel() > limit else "")


def _check(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`check_labels`, also telling whether every pred value is a class.

    Validate a pair of label maps and return them as int64 torch tensors [N, H, W].

    pred, target: torch tensors or numpy arrays of integer (or bool) labels, both [N, H, W] or
    both [H, W] (then N = 1). Torch inputs stay on their device (numpy ones join it);
    ``device`` moves both there. Raises TypeError for non-array or floating inputs, ValueError
    for shape mismatch, empty maps, target labels outside [0, num_classes) that are not
    ``ignore_index``, and pred labels outside [0, num_classes) (pred may be ``ignore_index``
    only where the target is ignored).
    """
    num_classes = _check_num_classes(num_classes)
    ignore_index = _check_ignore_index(ignore_index)
    dev = torch.device(device) if device is not None else None
    if dev is None:
        # A numpy array joins the device of a torch tensor given with it.
        for x in (target, pred):
            if isinstance(x, torch.Tensor):
                dev = x.device
                break
    if (
        device is None
        and isinstance(pred, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and pred.device != target.device
    ):
        raise ValueError(
            f"pred and target must be on the same device, got {pred.device} and {target.device}"
        )
    p = _as_tensor(pred, "pred", dev)
    t = _as_tensor(target, "target", dev)
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}"
        )
    if t.dim() == 2:
        p, t = p.unsqueeze(0), t.unsqueeze(0)
    elif t.dim() != 3:
        raise ValueError(f"label maps must be [N, H, W] or [H, W], got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"label maps must not be empty, got shape {tuple(t.shape)}")

    C = num_classes
    tmin, tmax = (int(v) for v in torch.aminmax(t))
    if tmin < 0 or tmax >= C:
        bad = ((t < 0) | (t >= C)) if ignore_index is None else ((t < 0) | (t >= C)) & (
            t != ignore_index
        )
        if bool(bad.any()):
            vals = t[bad]
            kind = "negative labels" if int(vals.min()) < 0 else f"labels >= num_classes={C}"
            raise ValueError(
                f"target has {kind} that are not ignore_index={ignore_index}: values "
                f"{_describe_values(vals)} (expected 0..{C - 1} or {ignore_index})"
            )
    pmin, pmax = (int(v) for v in torch.aminmax(p))
    pred_all_classes = pmin >= 0 and pmax < C
    if not pred_all_classes:
        bad = (p < 0) | (p >= C)
        if ignore_index is not None:
            bad &= ~((p == ignore_index) & (t == ignore_index))
        if bool(bad.any()):
            vals = p[bad]
            kind = "negative labels" if int(vals.min()) < 0 else f"labels >= num_classes={C}"
            raise ValueError(
                f"pred has {kind}: values {_describe_values(vals)} (expected 0..{C - 1}; "
                f"ignore_index={ignore_index} is allowed only where the target is ignored)"
            )
    return p, t, pred_all_classes


def check_labels(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None = 255,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of label maps and return them as int64 torch tensors [N, H, W].

    pred, target: torch tensors or numpy arrays of integer (or bool) labels, both [N, H, W] or
    both [H, W] (then N = 1). Torch inputs stay on their device (numpy ones join it);
    ``device`` moves both there. Raises TypeError for non-array or floating inputs, ValueError
    for shape mismatch, empty maps, target labels outside [0, num_classes) that are not
    ``ignore_index``, and pred labels outside [0, num_classes) (pred may be ``ignore_index``
    only where the target is ignored).
    """
    p, t, _ = _check(pred, target, num_classes, ignore_index, device=device)
    return p, t


# ---------------------------------------------------------------------------------------------
# building blocks (inputs already validated)
# ---------------------------------------------------------------------------------------------


def _codes_dtype(num_classes: int) -> torch.dtype:
    """Integer dtype for class codes in [0, C] and confusion indices < 2 (C+1)^2."""
    return torch.int16 if 2 * (num_classes + 1) ** 2 < 2**15 else torch.int64


def _stack_codes(
    maps: list[tuple[torch.Tensor, int | None]], num_classes: int
) -> torch.Tensor:
    """[(labels [N,H,W] int64, non-class value or None), ...] -> codes [N, K, H, W].

    A code is the class c for a class pixel and C for anything else (ignored target pixels,
    the ignore value in pred). Validated inputs: every value is a class or the given value.
    """
    first = maps[0][0]
    n, h, w = first.shape
    codes = torch.empty((n, len(maps), h, w), dtype=_codes_dtype(num_classes), device=first.device)
    for k, (labels, nonclass) in enumerate(maps):
        if nonclass is None:
            codes[:, k].copy_(labels)
        else:
            codes[:, k].copy_(torch.where(labels == nonclass, num_classes, labels))
    return codes


def _label_boundaries(codes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """codes [N, K, H, W] (values in [0, C], C = no class) -> bool [N, K, H, W].

    True where the pixel holds a class c and lies on B_c = (L==c) & ~erode3x3(L==c), i.e. some
    3x3 neighbour inside the image holds another code. morphology.erode3x3 gives the min and
    (as -erode3x3(-x)) the max of all maps in one pooling call.
    """
    k = codes.shape[1]
    x = torch.empty((codes.shape[0], 2 * k, *codes.shape[2:]), device=codes.device)
    x[:, :k].copy_(codes)
    torch.neg(x[:, :k], out=x[:, k:])
    pooled = erode3x3(x)  # [min3(codes), -max3(codes)]
    return (codes < num_classes) & (pooled[:, :k] + pooled[:, k:] != 0)


def _or_dilate_axis(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """OR over a centred window of 2r+1 along ``dim`` (outside = 0); integer x."""
    n = x.shape[dim]
    r = min(radius, n - 1)  # a larger window adds nothing but zeros
    if r <= 0:
        return x
    length = 2 * r + 1
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [r, r]
    f = F.pad(x, pad)  # padded p; after the doublings f(j) = OR p[j .. j+k-1]
    k = 1
    while 2 * k <= length:
        m = f.shape[dim] - k
        f = f.narrow(dim, 0, m) | f.narrow(dim, k, m)
        k *= 2
    # OR p[j .. j+length-1] = OR x[j-r .. j+r]
    return f.narrow(dim, 0, n) | f.narrow(dim, length - k, n)


def _or_dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square (2r+1)^2 OR-dilation of an integer bit map [..., H, W], outside = 0.

    Per bit, equals morphology.dilate(bit map, radius) (separable max = OR on {0, 1}).
    """
    if radius == 0:
        return x
    return _or_dilate_axis(_or_dilate_axis(x, radius, -2), radius, -1)


def _bits_dtype(num_classes: int) -> tuple[torch.dtype, int]:
    """Smallest integer dtype and the number of classes per word of a bit-packed class set."""
    if num_classes <= 8:
        return torch.uint8, 8
    if num_classes <= 15:
        return torch.int16, 15
    if num_classes <= 31:
        return torch.int32, 31
    return torch.int64, 63


class _BoundaryStats:
    """Class boundaries of label maps and their tolerance dilations as bit-packed class sets.

    codes: [N, K, H, W] (from :func:`_stack_codes`). ``boundary``: bool [N, K, H, W], pixel on
    the boundary of its own class. ``words``: per word of ``per_word`` classes, an integer map
    [N, K, H, W] whose bit (c - word start) is D_r(B_c) at that pixel.
    """

    def __init__(self, codes: torch.Tensor, num_classes: int, tolerance: int) -> None:
        C = num_classes
        self.num_classes = C
        self.codes = codes
        self.boundary = _label_boundaries(codes, C)
        dtype, per_word = _bits_dtype(C)
        self.per_word = per_word
        self.words: list[torch.Tensor] = []
        n_words = math.ceil(C / per_word)
        for w in range(n_words):
            if n_words == 1:  # boundary pixels have codes < C <= bits of the dtype
                member, shift = self.boundary, codes
            else:
                lo = w * per_word
                member = self.boundary & (codes >= lo) & (codes < lo + per_word)
                shift = (codes - lo).clamp(0, per_word - 1)
            bits = torch.bitwise_left_shift(member.to(dtype), shift.to(dtype))
            self.words.append(_or_dilate(bits, tolerance))

    def dilated_any(self, channel: int) -> torch.Tensor:
        """bool [N, H, W]: D_r(union_c B_c) of map ``channel``."""
        out = self.words[0][:, channel] != 0
        for word in self.words[1:]:
            out |= word[:, channel] != 0
        return out

    def counts(self, valid: torch.Tensor) -> torch.Tensor:
        """int64 [4, C] rows (n_p, n_g, m_p, m_g), counted at valid pixels only.

        Channel 0 is pred, channel 1 is target.
        """
        C = self.num_classes
        out = []
        for ch, other in ((0, 1), (1, 0)):  # pred boundary vs target dilation, and back
            sel = (self.boundary[:, ch] & valid).reshape(-1).nonzero().squeeze(1)
            cls = self.codes[:, ch].reshape(-1)[sel].to(torch.int64)
            hit = torch.zeros_like(cls)
            for w, word in enumerate(self.words):
                lo = w * self.per_word
                shift = (cls - lo).clamp(0, self.per_word - 1)
                dil = word[:, other].reshape(-1)[sel].to(torch.int64)
                bit = torch.bitwise_right_shift(dil, shift) & 1
                if len(self.words) > 1:
                    bit &= ((cls >= lo) & (cls < lo + self.per_word)).to(torch.int64)
                hit |= bit
            both = torch.bincount(cls + C * hit, minlength=2 * C)
            out.append((both[:C] + both[C:], both[C:]))  # (n, m)
        (n_p, m_p), (n_g, m_g) = out
        return torch.stack([n_p, n_g, m_p, m_g])


def _pred_nonclass(num_classes: int, ignore_index: int | None, pred_all_classes: bool):
    """The value of pred that is no class (ignore_index outside [0, C)), or None if none."""
    if pred_all_classes or ignore_index is None or 0 <= ignore_index < num_classes:
        return None
    return ignore_index


def _all_stats(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None,
    tolerance: int,
    pred_all_classes: bool = False,
    background: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated int64 [N, H, W] maps -> (confusion [C,C], band confusion [C,C], bf1 [4,C]).

    background: a class whose target boundary is left out of the BIoU band, or None."""
    C = num_classes
    codes = _stack_codes(
        [(pred, _pred_nonclass(C, ignore_index, pred_all_classes)), (target, ignore_index)], C
    )
    valid = codes[:, 1] < C  # target != ignore_index
    stats = _BoundaryStats(codes, C, tolerance)
    if background is None:
        band = stats.dilated_any(1)
    else:
        fg = stats.boundary[:, 1] & (codes[:, 1] != background)
        band = _or_dilate(fg.to(torch.uint8), tolerance) != 0
    # One bincount for both confusion matrices: bins (band, target code, pred code); target
    # code C is a dustbin row for ignored pixels.
    K = (C + 1) * (C + 1)
    idx = codes[:, 1] * (C + 1) + codes[:, 0] + band.to(codes.dtype) * K
    cm = torch.bincount(idx.reshape(-1), minlength=2 * K).view(2, C + 1, C + 1)[:, :C, :C]
    return cm[0] + cm[1], cm[1].contiguous(), stats.counts(valid)


# ---------------------------------------------------------------------------------------------
# public low-level helpers
# ---------------------------------------------------------------------------------------------


def confusion_matrix(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    mask: Any = None,
) -> torch.Tensor:
    """Confusion matrix M[g, p] over valid pixels (target != ignore_index), one bincount.

    pred, target: [N, H, W] or [H, W] labels (validated by :func:`check_labels`).
    mask: optional bool map of the same shape; only pixels where it is True count.
    Returns int64 [C, C] on the labels' device.
    """
    p, t = check_labels(pred, target, num_classes, ignore_index)
    C = num_classes
    codes = _stack_codes([(p, _pred_nonclass(C, ignore_index, False)), (t, ignore_index)], C)
    tcodes = codes[:, 1]
    if mask is not None:
        m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
        if m.dtype != torch.bool:
            raise TypeError(f"mask must be a bool map, got dtype {m.dtype}")
        m = m.to(t.device)
        if m.dim() == 2:
            m = m.unsqueeze(0)
        if m.shape != t.shape:
            raise ValueError(
                f"mask must have the labels' shape {tuple(t.shape)}, got {tuple(m.shape)}"
            )
        tcodes = torch.where(m, tcodes, C)
    idx = tcodes * (C + 1) + codes[:, 0]
    cm = torch.bincount(idx.reshape(-1), minlength=(C + 1) * (C + 1)).view(C + 1, C + 1)
    return cm[:C, :C].contiguous()


def boundary_band(
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    tolerance: int = 5,
    boundary_classes: str = "all",
    background_index: int = 0,
) -> torch.Tensor:
    """Trimap band of BIoU: D_r(union_c B_c(target)), bool [N, H, W] ([1, H, W] for [H, W]).

    The target's ignore value is not a class, so it has no boundary (pixels of a class next to
    an ignore region do). ``boundary_classes="foreground"``: the union runs over the classes
    other than ``background_index`` (the official VOC evaluation's ``drop_bg``).
    """
    tolerance = _check_tolerance(tolerance)
    background = check_boundary_classes(boundary_classes, background_index, num_classes)
    t, _ = check_labels(target, target, num_classes, ignore_index)
    codes = _stack_codes([(t, ignore_index)], num_classes)
    boundary = _label_boundaries(codes, num_classes)
    if background is not None:
        boundary &= codes != background
    return _or_dilate(boundary.to(torch.uint8), tolerance)[:, 0] != 0


def bf1_counts(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    tolerance: int = 5,
) -> torch.Tensor:
    """Boundary-F1 counts per class, int64 [4, C], rows (n_p, n_g, m_p, m_g).

    n_p = |B_c(pred)|, n_g = |B_c(target)|, m_p = |B_c(pred) & D_r(B_c(target))|,
    m_g = |B_c(target) & D_r(B_c(pred))|, each counted over valid pixels only.
    """
    tolerance = _check_tolerance(tolerance)
    p, t = check_labels(pred, target, num_classes, ignore_index)
    C = num_classes
    codes = _stack_codes([(p, _pred_nonclass(C, ignore_index, False)), (t, ignore_index)], C)
    return _BoundaryStats(codes, C, tolerance).counts(codes[:, 1] < C)


def _nanmean(values: torch.Tensor, include: torch.Tensor) -> float:
    n = int(include.sum())
    return float(values[include].sum() / n) if n else float("nan")


def _miou(cm: torch.Tensor, classes: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    tp = cm.diagonal()
    row, col = cm.sum(1), cm.sum(0)
    denom = row + col - tp
    iou = torch.where(denom > 0, tp / denom.clamp(min=1), torch.zeros_like(tp))
    return _nanmean(iou, (denom > 0) & classes), iou, row


def scores_from_stats(
    confusion: torch.Tensor,
    band_confusion: torch.Tensor,
    bf1_counts: torch.Tensor,
    *,
    ignore_index: int | None = None,
    bf1_background: int | None = None,
) -> dict[str, float]:
    """The six metrics from dataset-level sums (DESIGN section 2).

    confusion, band_confusion: [C, C] counts M[g, p]; bf1_counts: [4, C] rows
    (n_p, n_g, m_p, m_g). A class with a zero denominator is left out of a mean; an empty mean
    is nan. ``ignore_index`` inside [0, C) names a class that is left out of every mean;
    ``bf1_background`` a class left out of the BF1 mean (``boundary_classes="foreground"``).
    Returns {metric: float} in METRICS order.
    """
    cm = torch.as_tensor(confusion).detach().to("cpu", torch.float64)
    bcm = torch.as_tensor(band_confusion).detach().to("cpu", torch.float64)
    bf = torch.as_tensor(bf1_counts).detach().to("cpu", torch.float64)
    C = cm.shape[0]
    if cm.shape != (C, C) or bcm.shape != (C, C) or bf.shape != (4, C):
        raise ValueError(
            "expected confusion [C, C], band_confusion [C, C] and bf1_counts [4, C], got "
            f"{tuple(cm.shape)}, {tuple(bcm.shape)} and {tuple(bf.shape)}"
        )
    classes = torch.ones(C, dtype=torch.bool)
    if ignore_index is not None and 0 <= ignore_index < C:
        classes[ignore_index] = False

    total = cm.sum()
    tp = cm.diagonal()
    row = cm.sum(1)
    miou, iou, _ = _miou(cm, classes)
    biou, _, _ = _miou(bcm, classes)
    gacc = float(tp.sum() / total) if total > 0 else float("nan")
    acc = tp / row.clamp(min=1)
    macc = _nanmean(acc, (row > 0) & classes)
    fwiou = float((row * iou * classes).sum() / total) if total > 0 else float("nan")

    n_p, n_g, m_p, m_g = bf
    prec = torch.where(n_p > 0, m_p / n_p.clamp(min=1), torch.zeros_like(n_p))
    rec = torch.where(n_g > 0, m_g / n_g.clamp(min=1), torch.zeros_like(n_g))
    s = prec + rec
    f1 = torch.where(s > 0, 2 * prec * rec / torch.where(s > 0, s, 1.0), torch.zeros_like(s))
    bf1_classes = classes
    if bf1_background is not None:
        bf1_classes = classes.clone()
        bf1_classes[bf1_background] = False
    bf1 = _nanmean(f1, ((n_p + n_g) > 0) & bf1_classes)
    return {"miou": miou, "fwiou": fwiou, "biou": biou, "bf1": bf1, "macc": macc, "gacc": gacc}


# ---------------------------------------------------------------------------------------------
# streaming accumulator and one-shot evaluation
# ---------------------------------------------------------------------------------------------


class MetricAccumulator:
    """Streaming dataset-level accumulation of all six metrics.

    ``update(pred, target)`` adds a batch ([N, H, W] or [H, W], torch or numpy; maps of
    different sizes in different batches are fine); ``compute()`` turns the sums into the six
    metrics; ``reset()`` starts over. The sums live on ``device`` if given, else on the device
    of the first batch (later batches are moved there).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = 255,
        boundary_tolerance: int = 5,
        device: torch.device | str | None = None,
        boundary_classes: str = "all",
        background_index: int = 0,
    ) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = _check_ignore_index(ignore_index)
        self.boundary_tolerance = _check_tolerance(boundary_tolerance)
        self._background = check_boundary_classes(boundary_classes, background_index,
                                                  self.num_classes)
        self.boundary_classes = boundary_classes
        self.background_index = int(background_index)
        self.device = torch.device(device) if device is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        C = self.num_classes
        dev = self.device if self.device is not None else torch.device("cpu")
        self._confusion = torch.zeros(C, C, dtype=torch.int64, device=dev)
        self._band_confusion = torch.zeros(C, C, dtype=torch.int64, device=dev)
        self._bf1 = torch.zeros(4, C, dtype=torch.int64, device=dev)
        self._pixels = 0
        self._images = 0

    @property
    def confusion(self) -> torch.Tensor:
        """int64 [C, C] confusion matrix M[g, p] accumulated so far."""
        return self._confusion

    @property
    def band_confusion(self) -> torch.Tensor:
        """int64 [C, C] confusion matrix restricted to the boundary band."""
        return self._band_confusion

    @property
    def bf1_counts(self) -> torch.Tensor:
        """int64 [4, C] rows (n_p, n_g, m_p, m_g) accumulated so far."""
        return self._bf1

    @property
    def num_images(self) -> int:
        return self._images

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch of label maps pred, target: [N, H, W] or [H, W]."""
        dev = self.device
        if dev is None and self._images > 0:
            dev = self._confusion.device
        p, t, pred_all_classes = _check(
            pred, target, self.num_classes, self.ignore_index, device=dev
        )
        if self._confusion.device != t.device:  # first batch decides the device
            self._confusion = self._confusion.to(t.device)
            self._band_confusion = self._band_confusion.to(t.device)
            self._bf1 = self._bf1.to(t.device)
        cm, bcm, bf = _all_stats(
            p, t, self.num_classes, self.ignore_index, self.boundary_tolerance, pred_all_classes,
            self._background,
        )
        self._confusion += cm
        self._band_confusion += bcm
        self._bf1 += bf
        self._images += t.shape[0]
        self._pixels += t.numel()

    def compute(self, *, sync: bool = False, group: Any = None) -> dict[str, float]:
        """The six metrics as floats in [0, 1] (nan for a mean over no class).

        sync=True: of the sums over all ranks of the torch.distributed ``group`` (default
        group; see :meth:`reduced`), which every rank must call together; this accumulator
        keeps its local sums.
        """
        if not isinstance(sync, bool):
            raise TypeError(f"sync must be True or False, got {sync!r}")
        if sync:
            return self.reduced(group=group).compute()
        if self._images == 0:
            raise ValueError("no data: call update(pred, target) at least once before compute()")
        return scores_from_stats(
            self._confusion, self._band_confusion, self._bf1, ignore_index=self.ignore_index,
            bf1_background=self._background,
        )

    def reduced(self, *, group: Any = None) -> MetricAccumulator:
        """A new accumulator holding the sums of this one over all ranks of a torch.distributed
        process group (default: the default group): one all-reduce of the integer counts
        (confusion matrices, BF1 counts, images, pixels), so N ranks that each saw a part of
        a dataset give exactly the numbers of one process that saw all of it. A collective:
        every rank calls it. The counts travel on the sums' device (pass ``device=`` to the
        accumulator so that a rank without batches matches the others, e.g. "cuda" for
        NCCL). This accumulator is unchanged. RuntimeError when torch.distributed is not
        initialized.
        """
        from autoloss_ray.distributed import all_reduce_counts

        C = self.num_classes
        dev = self._confusion.device
        meta = torch.tensor([self._images, self._pixels], dtype=torch.int64, device=dev)
        flat = torch.cat([self._confusion.reshape(-1), self._band_confusion.reshape(-1),
                          self._bf1.reshape(-1), meta])
        all_reduce_counts(flat)
        out = MetricAccumulator(C, ignore_index=self.ignore_index,
                                boundary_tolerance=self.boundary_tolerance, device=self.device,
                                boundary_classes=self.boundary_classes,
                                background_index=self.background_index)
        cc = C * C
        out._confusion = flat[:cc].view(C, C).clone()
        out._band_confusion = flat[cc:2 * cc].view(C, C).clone()
        out._bf1 = flat[2 * cc:2 * cc + 4 * C].view(4, C).clone()
        out._images, out._pixels = (int(v) for v in flat[2 * cc + 4 * C:])
        return out


def evaluate(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    boundary_tolerance: int = 5,
    boundary_classes: str = "all",
    background_index: int = 0,
) -> dict[str, float]:
    """All six metrics of pred against target, accumulated over the batch.

    pred, target: integer label maps [N, H, W] or [H, W], torch (any device) or numpy.
    boundary_classes: "all" (default) or "foreground" (the BIoU band and the BF1 mean leave
    out ``background_index``, as the official VOC evaluation does).
    Returns {"miou", "fwiou", "biou", "bf1", "macc", "gacc"} as floats in [0, 1]; a mean over
    an empty class set (everything ignored; no boundary for biou/bf1) is nan.
    """
    acc = MetricAccumulator(
        num_classes, ignore_index=ignore_index, boundary_tolerance=boundary_tolerance,
        boundary_classes=boundary_classes, background_index=background_index,
    )
    acc.update(pred, target)
    return acc.compute()


# ---------------------------------------------------------------------------------------------
# metric specs and rewards
# ---------------------------------------------------------------------------------------------


def parse_metric(spec: str) -> tuple[str, ...]:
    """"miou+biou" -> ("miou", "biou"). Terms must be in METRICS, each at most once."""
    if not isinstance(spec, str):
        raise TypeError(f"metric must be a string like 'miou' or 'miou+biou', got {spec!r}")
    terms = tuple(term.strip().lower() for term in spec.split("+"))
    for term in terms:
        if term not in METRICS:
            raise ValueError(
                f"unknown metric {term!r} in {spec!r}; allowed: {', '.join(METRICS)} "
                "(or a sum such as 'miou+biou')"
            )
    if len(set(terms)) != len(terms):
        raise ValueError(f"metric {spec!r} names a term twice")
    return terms


def reward(metrics: Mapping[str, float], spec: str) -> float:
    """Sum of the metric values named by ``spec`` (e.g. "miou+biou"); nan propagates."""
    terms = parse_metric(spec)
    missing = [t for t in terms if t not in metrics]
    if missing:
        raise KeyError(f"metrics {missing} needed by {spec!r} are missing from {sorted(metrics)}")
    return float(sum(float(metrics[t]) for t in terms))
