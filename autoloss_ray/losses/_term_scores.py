"""The soft score of each metric term of :class:`~autoloss_ray.losses.SurrogateLoss`
(docs/paper.md#the-surrogate-losses; the formulas are in :mod:`.surrogate`'s docstring).

The region metrics (mIoU, FWIoU, BIoU, mAcc, gAcc: :func:`region_score`) from their per-class
statistics I_c, O_c, n_c, and BF1 (:func:`bf1_score`) from its soft counts
(:func:`bf1_counts`, :func:`bf1_counts_native`), each on the fused CPU kernels (:mod:`._native`),
the Triton kernels on CUDA (:mod:`._triton`, :mod:`._triton_bf1`) or the torch code
(:mod:`._eager`, :mod:`._boundary`), with the per-class sums summed over the ranks for
``sync="ddp"``.

Each function takes the loss first (its class count, ignore index, tolerance, boundary classes
and ``sync``, read as attributes, as :func:`.loss_file.loss_to_dict` reads them), then what
:meth:`SurrogateLoss.score <autoloss_ray.losses.SurrogateLoss.score>` prepared for the call:
the checked logits and target, the class set, the placed curve tables, the compute dtype and
whether the fused CPU kernels run.
"""

from __future__ import annotations

from typing import Any

import torch

from autoloss_ray.distributed import all_reduce_sum
from autoloss_ray.losses import _triton, _triton_bf1
from autoloss_ray.losses._boundary import _argmax1, _window_max_at
from autoloss_ray.losses._eager import _RegionStats, _SoftBoundary
from autoloss_ray.losses._native import _BF1Native, _label_sites, _RegionStatsNative
from autoloss_ray.losses.space import CURVES
from autoloss_ray.metrics.counts import checked_boundary_band
from autoloss_ray.morphology import boundaries, dilate

__all__ = ["region_score", "bf1_score", "bf1_counts", "bf1_counts_native"]

_EPS = 1e-6


def _mean_over(values: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [C] over the classes ``sel`` [C] (bool); 0 (zero gradient, graph
    kept) when ``sel`` is empty. No host read: nothing waits for the device."""
    k = sel.sum()
    picked = torch.where(sel, values, 0.0).sum()
    return torch.where(k > 0, picked / k.clamp(min=1), picked * 0.0)


def _ratio_or_zero(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` for a count ``den`` (a sum of 0/1 weights), 0 when it is 0; no host
    read."""
    return torch.where(den > 0, num / den.clamp(min=1), num * 0.0)


def _synced(loss: Any, cd: torch.dtype, *sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The per-class sums [C] summed over the ranks when the loss has ``sync="ddp"`` (one
    all-reduce of their stack, in the compute dtype; the gradient flows to the differentiable
    ones), else unchanged."""
    if loss.sync == "none":
        return sums
    return tuple(all_reduce_sum(torch.stack([x.to(cd) for x in sums])).unbind(0))


def region_score(loss, term, logits, target, tgt, valid, classes, tables, cd, fused,
                 prep=None):
    """The soft score of the region term ``term`` (a scalar tensor) from its statistics I, O, n
    per class: by the fused CPU kernels when ``fused`` (``prep``: that path's
    :func:`._native._target_prep` of the target, whose target and weights it takes), else by
    the Triton kernels on CUDA or the eager torch code (``tgt``: the target with ignored pixels
    at 0; ``valid``: the pixels that count)."""
    C = loss.num_classes
    if prep is not None:  # the fused CPU path: target and weights from _target_prep
        tgt, w = prep[0], (prep[2] if term == "biou" else prep[1])
    elif term == "biou":
        band = checked_boundary_band(target, C, ignore_index=loss.ignore_index,
                                     tolerance=loss.boundary_tolerance,
                                     background=loss._background)
        w = (valid & band).to(cd)
    else:
        w = valid.to(cd)
    and_table = tables[(term, "and")]
    or_table = tables[(term, "or")] if "or" in CURVES[term] else None
    if fused:
        # the kernels take the compute dtype; other dtypes (bf16 under autocast) convert;
        # n (target pixels per class) comes from the same pass
        z = logits.to(cd).contiguous()
        I, O, npred, n = _RegionStatsNative.apply(z, tgt.contiguous(), w.contiguous(),
                                                  and_table, or_table)
    else:
        with torch.no_grad():  # target pixels per class
            n = torch.zeros(C, dtype=cd, device=w.device).index_add_(0, tgt.reshape(-1),
                                                                     w.reshape(-1))
        if _triton.usable(logits, cd):  # CUDA: the Triton kernels of ._triton
            I, O, npred = _triton.RegionStats.apply(logits.contiguous(), tgt.contiguous(),
                                                    w.contiguous(), and_table, or_table)
        else:
            z = logits if logits.is_contiguous() else logits.contiguous()
            I, O, npred = _RegionStats.apply(z, tgt.contiguous(), w, and_table, or_table)
    I, O, n, npred = _synced(loss, cd, I, O, n, npred)
    if term == "gacc":
        return _ratio_or_zero(I.sum(), n.sum())
    if term == "macc":
        return _mean_over(I / n.clamp(min=1), (n > 0) & classes)
    iou = I / (O + n).clamp(min=_EPS)
    if term == "fwiou":
        return _ratio_or_zero((iou * n * classes).sum(), n.sum())
    return _mean_over(iou, ((n > 0) | (npred > 0)) & classes)


def bf1_score(loss, logits, target, valid, classes, tables, cd, fused) -> torch.Tensor:
    """BF1's soft score: the mean over the class set of each class's F1 of the soft boundary
    precision and recall (without the background for ``boundary_classes="foreground"``)."""
    counts = bf1_counts_native if fused else bf1_counts
    n_p, m_p, m_g, n_g, n_p_hard = _synced(loss, cd, *counts(loss, logits, target, valid,
                                                             tables, cd))
    sel = ((n_p_hard > 0) | (n_g > 0)) & classes
    if loss._background is not None:  # boundary_classes="foreground"
        sel[loss._background] = False
    prec = m_p / n_p.clamp(min=_EPS)
    rec = m_g / n_g.clamp(min=_EPS)
    f1 = 2.0 * prec * rec / (prec + rec).clamp(min=_EPS)
    return _mean_over(f1, sel)


def bf1_counts(loss, logits, target, valid, tables, cd):
    """BF1's soft counts [C] (n_p, m_p, m_g, n_g) and the predicted boundary pixels per
    class n_p_hard without the fused CPU kernels: b, n_p and m_p by the Triton kernels of
    :mod:`._triton_bf1` on CUDA, by torch ops otherwise (the CPU fallback)."""
    C = loss.num_classes
    r = loss.boundary_tolerance
    with torch.no_grad():
        # exact target boundary; the ignore value is not a class (no boundary of its own)
        tmap = torch.where(valid, target, -1) if loss.ignore_index is not None else target
        tclass = tmap.unsqueeze(1) == torch.arange(C, device=target.device).view(1, C, 1, 1)
        bg = boundaries(tclass)
        dbg = dilate(bg, r)
        bgv = bg & valid.unsqueeze(1)
        n_g = bgv.sum((0, 2, 3)).to(cd)
        del tclass, bg
    curves = [tables[("bf1", k)] for k in CURVES["bf1"]]
    if _triton.usable(logits, cd):  # CUDA: b, n_p and m_p in fused Triton kernels
        b, n_p, m_p, pred = _triton_bf1.BF1Counts.apply(
            logits.contiguous(), valid.to(cd).contiguous(),
            dbg.contiguous().view(torch.uint8), *curves)
    else:
        with torch.no_grad():
            pred = _argmax1(logits)
        z = logits if logits.is_contiguous() else logits.contiguous()
        b = _SoftBoundary.apply(z, cd, *curves)
        bv = b * valid.unsqueeze(1).to(cd)
        n_p = bv.sum((0, 2, 3))
        m_p = (bv * dbg.to(cd)).sum((0, 2, 3))
    with torch.no_grad():
        pclass = pred.unsqueeze(1) == torch.arange(C, device=pred.device).view(1, C, 1, 1)
        n_p_hard = (boundaries(pclass) & valid.unsqueeze(1)).sum((0, 2, 3))
        del pclass
    # m_g = sum(dilate(b, r) * bgv): read the dilation at the target-boundary sites only
    vals, cls = _window_max_at(b, bgv, r)
    m_g = torch.zeros(C, dtype=b.dtype, device=b.device).index_add(0, cls, vals)
    return n_p, m_p, m_g, n_g, n_p_hard


def bf1_counts_native(loss, logits, target, valid, tables, cd):
    """:func:`bf1_counts` by the fused CPU kernels (same values; boundaries from label
    maps)."""
    C = loss.num_classes
    z = logits.to(cd).contiguous()
    N, _, H, W = z.shape
    with torch.no_grad():
        # the ignore value is no class: a neighbour holding it differs from every class
        # already, unless it lies in [0, C), where -1 stands in for it
        ign = loss.ignore_index
        tmap = torch.where(valid, target, -1) if ign is not None and 0 <= ign < C else target
        site = _label_sites(tmap, valid)
        v = valid.to(cd).contiguous()
    pred = torch.empty((N, H, W), dtype=torch.int64)
    # n_p_hard: the predicted boundary pixels per class, counted by the forward kernel
    n_p, m_p, m_g, n_g, n_p_hard = _BF1Native.apply(
        z, pred, v, site, loss.boundary_tolerance,
        *(tables[("bf1", k)] for k in CURVES["bf1"]))
    return n_p, m_p, m_g, n_g, n_p_hard
