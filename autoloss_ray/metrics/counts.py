"""Dataset-level sums of the metrics: confusion matrices, the BIoU band and the BF1 counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from autoloss_ray.checks import check_tolerance
from autoloss_ray.metrics._boundary import (
    _bits_dtype,
    _BoundaryStats,
    _label_boundaries,
    _or_dilate,
    _pred_nonclass,
    _stack_codes,
)
from autoloss_ray.metrics._labels import check_boundary_classes, check_labels
from autoloss_ray.vocabulary import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX

__all__ = ["confusion_matrix", "boundary_band", "bf1_counts"]


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
    native = _native_stats(pred, target, C, ignore_index, tolerance, background)
    if native is not None:
        return native
    codes = _stack_codes(
        [(pred, _pred_nonclass(C, ignore_index, pred_all_classes)), (target, ignore_index)], C
    )
    dtype, per_word = _bits_dtype(C)
    if C > per_word:  # more classes than one bit word holds: the general path
        return _all_stats_words(codes, C, tolerance, background)
    # One word per map: bit c of dil[:, k] is D_r(B_c) of map k (pred 0, target 1).
    boundary = _label_boundaries(codes, C)
    cw = codes.to(dtype)
    dil = _or_dilate(torch.bitwise_left_shift(boundary.to(dtype), cw), tolerance)
    if background is None:
        band = dil[:, 1] != 0
    else:
        fg = boundary[:, 1] & (codes[:, 1] != background)
        band = _or_dilate(fg.to(torch.uint8), tolerance) != 0
    # A boundary pixel's state: 1 (its class is not in the other map's dilated boundary of the
    # same class) or 2 (it is); 0 elsewhere. hit = bit (own class) of the other map's word.
    K = C + 1
    idx_dtype = torch.int16 if 2 * K * K * 9 < 2**15 else torch.int64
    state = torch.bitwise_right_shift(dil.flip(1), cw).bitwise_and_(1).to(idx_dtype)
    state.add_(1).mul_(boundary)
    # One bincount for everything: bins (band, target code, pred code, pred state, target
    # state); target code C is a dustbin row for ignored pixels (never counted).
    idx = band.to(idx_dtype).mul_(K).add_(codes[:, 1]).mul_(K).add_(codes[:, 0])
    idx.mul_(3).add_(state[:, 0]).mul_(3).add_(state[:, 1])
    hist = torch.bincount(idx.reshape(-1), minlength=2 * K * K * 9).view(2, K, K, 3, 3)
    hist = hist[:, :C]  # valid pixels only
    both = hist.sum((3, 4))[:, :, :C]
    n_p = hist[:, :, :C, 1:].sum((0, 1, 3, 4))
    m_p = hist[:, :, :C, 2].sum((0, 1, 3))
    n_g = hist[:, :, :, :, 1:].sum((0, 2, 3, 4))
    m_g = hist[:, :, :, :, 2].sum((0, 2, 3))
    return both[0] + both[1], both[1].contiguous(), torch.stack([n_p, n_g, m_p, m_g])


def _native_stats(
    pred: torch.Tensor, target: torch.Tensor, C: int, ignore_index: int | None, tolerance: int,
    background: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`_all_stats` by the CPU kernel ``_native/metrics.cpp`` (the same integers; issue
    31: about 3x faster than the torch ops at CamVid's 360x480 on one thread), images split
    over ``torch.get_num_threads()`` threads. None where it does not apply (not int64 CPU
    maps, more than 63 classes, kernels unavailable or ``AUTOLOSS_RAY_NATIVE=0``) and when a
    label fails the value check of :func:`~autoloss_ray.metrics._labels._check`, which the
    kernel does on the way (so the maps need not have been value-checked: the caller then
    runs the check for its error)."""
    from autoloss_ray import native

    if (pred.device.type != "cpu" or target.device.type != "cpu" or C > 63
            or pred.dtype != torch.int64 or target.dtype != torch.int64
            or not (ignore_index is None or -2**63 <= ignore_index < 2**63)):
        return None
    lib = native.library()
    if lib is None:
        return None
    n, H, W = target.shape
    p, t = pred.contiguous(), target.contiguous()
    ranges = native.parallel_ranges(n, align=1)
    cm = torch.zeros((len(ranges), 2, C, C), dtype=torch.int64)
    bf = torch.zeros((len(ranges), 4, C), dtype=torch.int64)
    bad = torch.zeros((len(ranges), 2), dtype=torch.int64)
    has_ignore = ignore_index is not None
    ignore = int(ignore_index) if has_ignore else 0
    bg = -1 if background is None else int(background)
    native.run_ranges(lambda i, n0, n1: lib.autoloss_metric_stats(
        p.data_ptr(), t.data_ptr(), H, W, C, int(has_ignore), ignore, tolerance, bg, n0, n1,
        cm[i].data_ptr(), bf[i].data_ptr(), bad[i].data_ptr()), ranges)
    if bool(bad.any()):
        return None
    cm, bf = cm.sum(0), bf.sum(0)
    return cm[0] + cm[1], cm[1].contiguous(), bf


def _all_stats_words(
    codes: torch.Tensor, C: int, tolerance: int, background: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_all_stats` on several bit words per map (C above one word's classes)."""
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
    ignore_index: int | None = IGNORE_INDEX,
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
    ignore_index: int | None = IGNORE_INDEX,
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    boundary_classes: str = "all",
    background_index: int = 0,
) -> torch.Tensor:
    """Trimap band of BIoU: D_r(union_c B_c(target)), bool [N, H, W] ([1, H, W] for [H, W]).

    The target's ignore value is not a class, so it has no boundary (pixels of a class next to
    an ignore region do). ``boundary_classes="foreground"``: the union runs over the classes
    other than ``background_index`` (the official VOC evaluation's ``drop_bg``).
    """
    tolerance = check_tolerance(tolerance)
    background = check_boundary_classes(boundary_classes, background_index, num_classes)
    t, _ = check_labels(target, target, num_classes, ignore_index)
    return checked_boundary_band(t, num_classes, ignore_index=ignore_index,
                                 tolerance=tolerance, background=background)


def checked_boundary_band(
    target: torch.Tensor, num_classes: int, *, ignore_index: int | None, tolerance: int,
    background: int | None,
) -> torch.Tensor:
    """:func:`boundary_band` of checked input (no host read): target int64 [N, H, W] whose
    values are classes or ``ignore_index``; ``background`` the class left out of the band
    (``boundary_classes="foreground"``) or None. Returns bool [N, H, W]."""
    codes = _stack_codes([(target, ignore_index)], num_classes)
    boundary = _label_boundaries(codes, num_classes)
    if background is not None:
        boundary &= codes != background
    return _or_dilate(boundary.to(torch.uint8), tolerance)[:, 0] != 0


def bf1_counts(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
) -> torch.Tensor:
    """Boundary-F1 counts per class, int64 [4, C], rows (n_p, n_g, m_p, m_g).

    n_p = |B_c(pred)|, n_g = |B_c(target)|, m_p = |B_c(pred) & D_r(B_c(target))|,
    m_g = |B_c(target) & D_r(B_c(pred))|, each counted over valid pixels only.
    """
    tolerance = check_tolerance(tolerance)
    p, t = check_labels(pred, target, num_classes, ignore_index)
    C = num_classes
    codes = _stack_codes([(p, _pred_nonclass(C, ignore_index, False)), (t, ignore_index)], C)
    return _BoundaryStats(codes, C, tolerance).counts(codes[:, 1] < C)
