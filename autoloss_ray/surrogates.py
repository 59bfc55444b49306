"""Differentiable metric surrogates (DESIGN section 3): :class:`SurrogateLoss`, :func:`search_space`.

p = softmax(logits) (bilinearly resized to the label size if needed), y = one-hot target (zero
at ignored pixels), v = valid mask. Each logical operation is replaced by a parameterized
monotone curve applied to the soft argument (y is binary):
``AND(p, y) = h_and(p) y``, ``OR(p, y) = h_or(p) + y - h_or(p) y``.

Region metrics (mIoU, FWIoU, BIoU, mAcc, gAcc) only need, per class c and over weighted pixels
(weight v, times the target's boundary band for BIoU)::

    I_c = sum_{target = c} w h_and(p_c)          (the AND of the target class only)
    O_c = sum_{target != c} w h_or(p_c)          (U_c = O_c + n_c, n_c = sum_{target = c} w)

so h_and is evaluated on one probability per pixel, and h_or (mIoU, FWIoU, BIoU only) on every
(pixel, class). These statistics are computed by one fused autograd function, block by block
(cache-sized blocks on CPU, large blocks on GPU): softmax, the curve and its derivative, the
sums. It keeps only ``w (1 - y_c) h_or'(p_c)`` ([N, C, H, W], like the log-probabilities cross
entropy keeps) and ``w h_and'(p_t)`` ([N, H, W]) for backward, which recomputes the softmax per
block. Curve and statistics math is done in float32 (float64 for float64 logits), whatever the
autocast state.

BF1 builds a soft predicted boundary XOR(p_c, minpool3x3(p_c)) from h1..h4 (clamped at >= 0),
the exact target boundary, and tolerance by max-pooling (:mod:`autoloss_ray.morphology`, the
same operations as the exact metrics). The recall term needs the dilated soft boundary only at
target-boundary pixels, so it is read there alone (same values and gradient, ties included).

On CPU, both (region statistics and BF1) run on fused C++ kernels when they build
(:mod:`autoloss_ray.native`: ``_RegionStatsNative``, ``_BF1Native``; one pass per direction,
the BF1 soft boundary made one class plane at a time and never stored); the torch code here is
the GPU path and the fallback, and both are tested against each other.

Class sets (which classes a mean runs over) follow the exact metrics and are computed without
gradient from argmax(logits) and the target, so with one-hot logits every ``score`` equals
:func:`autoloss_ray.metrics.evaluate` on that batch (tested for every metric, parameterization
and random admissible theta). A mean over an empty class set gives score 0 (finite, zero
gradient), where ``evaluate`` reports nan.

A sum such as ``"miou+biou"`` has each term's own parameters (concatenated in order);
``score`` is the sum of the term scores and ``forward`` the sum of the term losses
(``len(terms) - score``; for one metric that is ``1 - score``).
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from autoloss_ray import _triton, native
from autoloss_ray.distributed import all_reduce_sum, check_sync
from autoloss_ray.metrics import METRICS, boundary_band, check_boundary_classes, parse_metric
from autoloss_ray.parameterizations import (
    IDENTITY_TABLE,
    CurveTable,
    Workspace,
    evaluate_table_into,
    get_parameterization,
)

__all__ = ["CURVES", "SearchSpace", "search_space", "SurrogateLoss", "FILE_FORMAT"]

CURVES: dict[str, tuple[str, ...]] = {
    "miou": ("and", "or"),
    "fwiou": ("and", "or"),
    "biou": ("and", "or"),
    "macc": ("and",),
    "gacc": ("and",),
    "bf1": ("h1", "h2", "h3", "h4"),
}

FILE_FORMAT = "autoloss-ray/loss"
FILE_VERSION = 1
_EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# search space
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SearchSpace:
    """The parameters of a metric surrogate: a box [low, high]^dim and the identity start.

    metric: the metric spec ("miou", "miou+biou", ...); parameterization: its name;
    dim: total parameter count; low, high, init: numpy float64 [dim] (+-inf for unbounded
    dims; init = identity curves); names: one per dimension, "<metric>.<curve>.<i>";
    slices: per (metric, curve) the slice of theta it owns.
    """

    metric: str
    parameterization: str
    dim: int
    low: np.ndarray = field(repr=False)
    high: np.ndarray = field(repr=False)
    init: np.ndarray = field(repr=False)
    names: tuple[str, ...] = field(repr=False)
    slices: tuple[tuple[str, str, slice], ...] = field(repr=False, default=())

    def contains(self, theta: Any) -> bool:
        """True when theta is a finite vector of length dim inside the box."""
        try:
            self.validate(theta)
        except (ValueError, TypeError):
            return False
        return True

    def validate(self, theta: Any) -> np.ndarray:
        """theta as a numpy float64 [dim]; ValueError if of wrong length or outside the box."""
        if isinstance(theta, torch.Tensor):
            theta = theta.detach().cpu().numpy()
        try:
            th = np.asarray(theta, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"theta must be a sequence of {self.dim} numbers, got {theta!r}") \
                from exc
        if th.shape != (self.dim,):
            raise ValueError(
                f"theta for {self.metric!r} with the {self.parameterization!r} parameterization "
                f"must have {self.dim} numbers, got {th.size}"
            )
        if not np.all(np.isfinite(th)):
            raise ValueError(f"theta must be finite, got {th.tolist()}")
        bad = np.nonzero((th < self.low) | (th > self.high))[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"theta[{i}] ({self.names[i]}) = {th[i]} is outside its box "
                f"[{self.low[i]}, {self.high[i]}] ({bad.size} value(s) outside)"
            )
        return th


def search_space(metric: str, parameterization: str = "bezier") -> SearchSpace:
    """The search space of the surrogate of ``metric`` (e.g. "miou" or "miou+biou")."""
    terms = parse_metric(metric)
    par = get_parameterization(parameterization)
    lows, highs, inits, names, slices = [], [], [], [], []
    offset = 0
    for term in terms:
        for curve in CURVES[term]:
            d = par.dim_per_curve
            lows.append(par.low)
            highs.append(par.high)
            inits.append(par.identity_theta)
            names.extend(f"{term}.{curve}.{i}" for i in range(d))
            slices.append((term, curve, slice(offset, offset + d)))
            offset += d
    cat = lambda xs: np.concatenate(xs).astype(np.float64) if xs else np.zeros(0)  # noqa: E731
    return SearchSpace(
        metric="+".join(terms),
        parameterization=par.name,
        dim=offset,
        low=cat(lows),
        high=cat(highs),
        init=cat(inits),
        names=tuple(names),
        slices=tuple(slices),
    )


# ---------------------------------------------------------------------------------------------
# fused region statistics
# ---------------------------------------------------------------------------------------------


_CPU_BLOCK = 1 << 16  # elements per block on CPU (scratch buffers stay in L2)
_GPU_BLOCK = 1 << 21


def _block_rows(C: int, H: int, W: int, device: torch.device) -> int:
    """Rows per block so that a block holds about _CPU_BLOCK (_GPU_BLOCK on GPU) elements."""
    budget = _GPU_BLOCK if device.type == "cuda" else _CPU_BLOCK
    return max(1, min(H, budget // max(1, C * W)))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _blocks(N: int, H: int, rows: int):
    for n in range(N):
        for r0 in range(0, H, rows):
            yield n, r0, min(H, r0 + rows)


def _block_softmax(z, n, r0, r1, pbuf, zbuf):
    """Softmax over classes of the block z[n, :, r0:r1] written into ``pbuf`` (z converted
    into ``zbuf`` first when its dtype is not the compute dtype). Returns a [C, q] view."""
    C, W = z.shape[1], z.shape[3]
    R = r1 - r0
    zb = z[n, :, r0:r1]
    if zbuf is not None:
        zb = zbuf[: C * R * W].view(C, R, W).copy_(zb)
    p = pbuf[: C * R * W].view(C, R, W)
    torch.ops.aten._softmax.out(zb, 0, False, out=p)
    return p.view(C, R * W)


def _first_order_only() -> None:
    """Called first in every fused backward: under create_graph=True (grad mode on during
    backward) refuse, since the fused backwards compute first derivatives only (a second
    derivative needs h'' and the saved derivatives' own dependence on z). An error, not a
    silently partial graph."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "SurrogateLoss supports first derivatives only: backward with create_graph=True "
            "(higher-order gradients, gradient penalties through the loss) is not "
            "implemented by its fused backward; call backward()/autograd.grad without "
            "create_graph")


class _RegionStats(torch.autograd.Function):
    """Per-class soft statistics of the region surrogates, fused and blocked.

    Inputs: z [N, C, H, W] logits (any float dtype), tgt [N, H, W] int64 in [0, C) (ignored
    pixels mapped to any class; their weight is 0), w [N, H, W] pixel weights in the compute
    dtype, and_table / or_table: CurveTable (on z's device, compute dtype) or None (skip).
    Returns I [C], O [C] and (no gradient) npred [C] = sum of w over argmax(z) == c:
    I_c = sum_{tgt=c} w h_and(p_c), O_c = sum_{tgt!=c} w h_or(p_c).

    Saved for backward: z (the input itself), w h_and'(p_t) [N, H, W] and w (1 - y) h_or'(p)
    [N*C*H*W] in block order; the softmax is recomputed per block.
    """

    @staticmethod
    def forward(ctx, z, tgt, w, and_table, or_table):  # noqa: D401
        N, C, H, W = z.shape
        cd = w.dtype
        dev = z.device
        rows = _block_rows(C, H, W, dev)
        P = rows * W
        I = torch.zeros(C, dtype=cd, device=dev)
        O = torch.zeros(C, dtype=cd, device=dev)
        with torch.no_grad():  # predicted classes: argmax(z), the first maximum
            npred = torch.zeros(C, dtype=cd, device=dev).index_add_(
                0, _argmax1(z).view(-1), w.reshape(-1))
        g_and = torch.empty((N, H, W), dtype=cd, device=dev) if and_table is not None else None
        g_or = torch.empty(N * C * H * W, dtype=cd, device=dev) if or_table is not None else None
        ws = Workspace(C * P if or_table is not None else P, cd, dev)
        pbuf = torch.empty(C * P, dtype=cd, device=dev)
        zbuf = torch.empty(C * P, dtype=cd, device=dev) if z.dtype != cd else None
        hbuf = torch.empty(C * P if or_table is not None else P, dtype=cd, device=dev)
        v1 = torch.empty(P, dtype=cd, device=dev)
        v2 = torch.empty(P, dtype=cd, device=dev)
        off = 0
        for n, r0, r1 in _blocks(N, H, rows):
            q = (r1 - r0) * W
            p = _block_softmax(z, n, r0, r1, pbuf, zbuf)
            t = tgt[n, r0:r1].reshape(q)
            wb = w[n, r0:r1].reshape(q)
            if and_table is not None:
                pt = torch.gather(p, 0, t.view(1, q), out=v1[:q].view(1, q)).view(q)
                h = hbuf[:q]
                d = g_and[n, r0:r1].view(q)
                evaluate_table_into(and_table, pt, h, d, ws)
                d.mul_(wb)
                I.index_add_(0, t, h.mul_(wb))
            if or_table is not None:
                h = hbuf[: C * q]
                d = g_or[off: off + C * q]
                evaluate_table_into(or_table, p.reshape(C * q), h, d, ws)
                h = h.view(C, q)
                O.addmv_(h, wb)
                ht = torch.gather(h, 0, t.view(1, q), out=v2[:q].view(1, q)).view(q)
                O.index_add_(0, t, ht.mul_(wb), alpha=-1.0)
                d = d.view(C, q)
                d.mul_(wb)
                d.scatter_(0, t.view(1, q), 0.0)
            off += C * q
        ctx.save_for_backward(z, tgt, g_and, g_or)
        ctx.mark_non_differentiable(npred)
        return I, O, npred

    @staticmethod
    def backward(ctx, gI, gO, _gnpred):
        _first_order_only()
        z, tgt, g_and, g_or = ctx.saved_tensors
        N, C, H, W = z.shape
        cd = g_and.dtype if g_and is not None else g_or.dtype
        dev = z.device
        grad = torch.empty(z.shape, dtype=z.dtype, device=dev)
        rows = _block_rows(C, H, W, dev)
        P = rows * W
        use_and = g_and is not None and gI is not None
        use_or = g_or is not None and gO is not None
        if gO is not None:
            gO = gO.to(cd).view(C, 1)
        if gI is not None:
            gI = gI.to(cd)
        pbuf = torch.empty(C * P, dtype=cd, device=dev)
        gbuf = torch.empty(C * P, dtype=cd, device=dev)
        zbuf = torch.empty(C * P, dtype=cd, device=dev) if z.dtype != cd else None
        v1 = torch.empty(P, dtype=cd, device=dev)
        off = 0
        for n, r0, r1 in _blocks(N, H, rows):
            R = r1 - r0
            q = R * W
            p = _block_softmax(z, n, r0, r1, pbuf, zbuf)
            gp = gbuf[: C * q].view(C, q)
            if use_or:
                torch.mul(g_or[off: off + C * q].view(C, q), gO, out=gp)
            else:
                gp.zero_()
            if use_and:
                t = tgt[n, r0:r1].reshape(q)
                a = torch.index_select(gI, 0, t, out=v1[:q])
                a.mul_(g_and[n, r0:r1].reshape(q))
                gp.scatter_add_(0, t.view(1, q), a.view(1, q))
            gp.mul_(p)
            s = torch.sum(gp, 0, keepdim=True)
            gp.sub_(p.mul_(s))
            grad[n, :, r0:r1].copy_(gp.view(C, R, W))
            off += C * q
        return grad, None, None, None, None


def _native_curve(table):
    """(nb, bounds ptr, coef ptr, keep-alive) of a CurveTable for the native kernels
    (nb = -2: not used, -1: identity)."""
    if table is None:
        return -2, None, None, ()
    if table.is_identity:
        return -1, None, None, ()
    b, c = table.bounds.contiguous(), table.coef.contiguous()
    return b.numel(), b.data_ptr(), c.data_ptr(), (b, c)


def _native_dtype(cd: torch.dtype) -> int:
    return 0 if cd == torch.float32 else 1


class _RegionStatsNative(torch.autograd.Function):
    """:class:`_RegionStats` by the fused CPU kernels (:mod:`autoloss_ray.native`).

    Same inputs and outputs; z must be a contiguous CPU tensor in the compute dtype (float32
    or float64). Saves z, w h_and'(p_t) [N, H, W] and w (1 - y) h_or'(p) [N, C, H, W]; the
    backward kernel recomputes the softmax per tile.
    """

    @staticmethod
    def forward(ctx, z, tgt, w, and_table, or_table):  # noqa: D401
        lib = native.library()
        N, C, H, W = z.shape
        cd = z.dtype
        HW = H * W
        g_and = torch.empty((N, H, W), dtype=cd) if and_table is not None else None
        g_or = torch.empty((N, C, H, W), dtype=cd) if or_table is not None else None
        ranges = native.parallel_ranges(N * HW)
        acc = torch.zeros((len(ranges), 3, C), dtype=torch.float64)
        nb_a, b_a, c_a, keep_a = _native_curve(and_table)
        nb_o, b_o, c_o, keep_o = _native_curve(or_table)
        dt = _native_dtype(cd)
        zp, tp, wp = z.data_ptr(), tgt.data_ptr(), w.data_ptr()
        gap, gop = native.ptr(g_and), native.ptr(g_or)

        def work(i, g0, g1):
            return lib.autoloss_region_forward(dt, zp, tp, wp, C, HW, g0, g1, nb_a, b_a, c_a,
                                               nb_o, b_o, c_o, gap, gop, acc[i].data_ptr())

        native.run_ranges(work, ranges)
        del keep_a, keep_o
        I, O, npred = acc.sum(0).to(cd).unbind(0)
        ctx.save_for_backward(z, tgt, g_and, g_or)
        ctx.mark_non_differentiable(npred)
        ctx.lib = lib
        return I, O, npred

    @staticmethod
    def backward(ctx, gI, gO, _gnpred):
        _first_order_only()
        lib = ctx.lib
        z, tgt, g_and, g_or = ctx.saved_tensors
        N, C, H, W = z.shape
        cd = z.dtype
        HW = H * W
        use_and = g_and is not None and gI is not None
        use_or = g_or is not None and gO is not None
        gI = gI.to(cd).contiguous() if use_and else None
        gO = gO.to(cd).contiguous() if use_or else None
        grad = torch.empty(z.shape, dtype=cd)
        dt = _native_dtype(cd)
        args = (native.ptr(gI), native.ptr(g_and) if use_and else None, native.ptr(gO),
                native.ptr(g_or) if use_or else None, grad.data_ptr())
        zp, tp = z.data_ptr(), tgt.data_ptr()

        def work(_i, g0, g1):
            return lib.autoloss_region_backward(dt, zp, tp, C, HW, g0, g1, *args)

        native.run_ranges(work, native.parallel_ranges(N * HW))
        return grad, None, None, None, None


class _BF1Native(torch.autograd.Function):
    """BF1's soft counts by one fused CPU kernel per direction (:mod:`autoloss_ray.native`).

    z [N, C, H, W] contiguous CPU logits in the compute dtype; pred: int64 [N, H, W] output
    buffer, filled with argmax_c z (first maximum); v [N, H, W] valid (0/1, compute dtype);
    site [N, H, W] int32 (target class of each target-boundary pixel, -1 elsewhere); r the
    tolerance; t1..t4 the curves h1..h4. Returns n_p, m_p, m_g (differentiable) and n_g (not),
    each [C], with b = clamp(XOR(p, erode3x3(p)), 0): n_p = sum v b_c, m_p = sum v b_c
    dilate(bg_c, r), m_g = sum of dilate(b_c, r) over the class-c sites, n_g = class-c sites.

    b is made one class plane at a time and never stored; backward keeps z, db/dp, db/de
    ([N, C, H, W]), dilate(bg, r) as bytes and each site's window-maximum position, and
    recomputes the softmax and the erosion's first-minimum positions.
    """

    @staticmethod
    def forward(ctx, z, pred, v, site, r, t1, t2, t3, t4):  # noqa: D401
        lib = native.library()
        N, C, H, W = z.shape
        ga, gb = torch.empty_like(z), torch.empty_like(z)
        dil = torch.empty((N, C, H, W), dtype=torch.uint8)
        arg = torch.empty((N, H, W), dtype=torch.int32)
        ranges = native.parallel_ranges(N, align=1)
        acc = torch.zeros((len(ranges), 4, C), dtype=torch.float64)
        curves = [_native_curve(t) for t in (t1, t2, t3, t4)]
        nbs = (ctypes.c_int * 4)(*(c[0] for c in curves))
        bounds = (ctypes.c_void_p * 4)(*(c[1] for c in curves))
        coefs = (ctypes.c_void_p * 4)(*(c[2] for c in curves))
        dt = _native_dtype(z.dtype)
        ptrs = [x.data_ptr() for x in (ga, gb, pred, dil, arg)]

        def work(i, n0, n1):
            return lib.autoloss_bf1_forward(dt, z.data_ptr(), v.data_ptr(), site.data_ptr(), C,
                                            H, W, r, n0, n1, nbs, bounds, coefs, *ptrs,
                                            acc[i].data_ptr())

        native.run_ranges(work, ranges)
        del curves
        n_p, m_p, m_g, n_g = acc.sum(0).to(z.dtype).unbind(0)
        ctx.save_for_backward(z, ga, gb, v, site, dil, arg)
        ctx.mark_non_differentiable(n_g)
        ctx.lib = lib
        return n_p, m_p, m_g, n_g

    @staticmethod
    def backward(ctx, gnp, gmp, gmg, _gng):
        _first_order_only()
        lib = ctx.lib
        z, ga, gb, v, site, dil, arg = ctx.saved_tensors
        N, C, H, W = z.shape
        gs = [None if x is None else x.to(z.dtype).contiguous() for x in (gnp, gmp, gmg)]
        grad = torch.empty_like(z)
        dt = _native_dtype(z.dtype)
        ptrs = [x.data_ptr() for x in (z, ga, gb, v, site, dil, arg)]

        def work(_i, n0, n1):
            return lib.autoloss_bf1_backward(dt, *ptrs, *(native.ptr(x) for x in gs), C, H, W,
                                             n0, n1, grad.data_ptr())

        native.run_ranges(work, native.parallel_ranges(N, align=1))
        return grad, None, None, None, None, None, None, None, None


def _label_sites(lab: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of a label map lab [N, H, W] (CPU kernel): int32 [N, H, W], lab where
    valid and some in-image 3x3 neighbour has another label, -1 elsewhere. For a pixel of
    class c that is exactly ``morphology.boundaries`` of the class-c mask (outside counts as
    inside)."""
    lib = native.library()
    N, H, W = lab.shape
    lab = lab.to(torch.int64).contiguous()
    valid = valid.to(torch.uint8).contiguous()
    out = torch.empty((N, H, W), dtype=torch.int32)

    def work(_i, n0, n1):
        return lib.autoloss_label_sites(lab.data_ptr(), valid.data_ptr(), H, W, n0, n1,
                                        out.data_ptr())

    native.run_ranges(work, native.parallel_ranges(N, align=1))
    return out


def _use_native(z: torch.Tensor) -> bool:
    """CPU logits go to the fused kernels when they are available, every logit is finite and
    an image has fewer than 2^31 pixels.
    NaN/inf logits take the eager path, where they propagate to the loss as autograd would
    (the kernels are built with -ffast-math, which does not promise that); the check is one
    sum in at least float32 (~1 ms for 11M logits), not a pass per element."""
    if z.device.type != "cpu" or native.library() is None:
        return False
    if z.shape[2:].numel() >= 2**31:  # the kernels keep in-image offsets in int32
        return False
    with torch.no_grad():
        total = z.sum(dtype=torch.float64 if z.dtype == torch.float64 else torch.float32)
        return bool(torch.isfinite(total))


def _boundaries_bool(x: torch.Tensor) -> torch.Tensor:
    """morphology.boundaries(x) = x & ~erode3x3(x) for a bool [N, C, H, W] map (outside counts
    as inside), by a separable AND of shifted slices (exact; no float min-pooling)."""
    e = x.clone()
    e[:, :, 1:] &= x[:, :, :-1]
    e[:, :, :-1] &= x[:, :, 1:]
    v = e
    e = v.clone()
    e[:, :, :, 1:] &= v[:, :, :, :-1]
    e[:, :, :, :-1] &= v[:, :, :, 1:]
    return x & ~e


def _dilate_bool(x: torch.Tensor, r: int) -> torch.Tensor:
    """morphology.dilate(x, r) for a bool [N, C, H, W] map (outside = 0), without gradient:
    a separable OR of shifted slices of the input (exactly the (2r+1)^2 max, ~10x cheaper
    than float max-pooling with a large kernel)."""
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


def _argmax1(z: torch.Tensor) -> torch.Tensor:
    """``z.argmax(1)`` for z [N, C, H, W] (the first maximum wins ties) -> int64 [N, H, W].

    On CPU a running maximum over the C planes, ~4x faster than argmax's strided reduction;
    elsewhere ``argmax`` itself. (NaN logits, which make every loss NaN anyway, are where
    the two may differ.)
    """
    if z.device.type != "cpu" or z.shape[1] == 1:
        return z.argmax(1)
    best = z[:, 0].clone()
    idx = torch.zeros(best.shape, dtype=torch.int64, device=z.device)
    better = torch.empty(best.shape, dtype=torch.bool, device=z.device)
    for c in range(1, z.shape[1]):
        zc = z[:, c]
        torch.gt(zc, best, out=better)
        torch.maximum(best, zc, out=best)
        idx.masked_fill_(better, c)
    return idx


def _erode3x3(p: torch.Tensor, *, indices: bool = False):
    """3x3 min-pool of p [N, C, H, W] (outside = +inf), as -max_pool2d(-p) computes it, with
    the pool's indices if asked. Pools in channels-last layout (same values and indices,
    2-3x faster on CPU); the results are channels-last, call ``.contiguous()`` for NCHW."""
    if p.device.type == "cpu" and not p.requires_grad:  # negate into channels-last, 1 pass
        q = torch.neg(p, out=torch.empty_like(p, memory_format=torch.channels_last))
    elif p.device.type == "cpu":
        q = p.neg().contiguous(memory_format=torch.channels_last)
    else:
        q = p.neg()
    if indices:
        e, idx = F.max_pool2d(q, kernel_size=3, stride=1, padding=1, return_indices=True)
        return e.neg_(), idx
    return F.max_pool2d(q, kernel_size=3, stride=1, padding=1).neg_()


def _window_max_at(b: torch.Tensor, sites: torch.Tensor, r: int) -> tuple[torch.Tensor, ...]:
    """dilate(b, r) read at the ``sites`` only, differentiable in b.

    b [N, C, H, W] float (values >= 0), sites [N, C, H, W] bool. Returns ``(vals [K], cls
    [K])``: the max of b over the (2r+1)^2 window around each of the K sites (outside the image
    ignored) and the site's class. The gradient goes to the first maximum in the order of
    :func:`autoloss_ray.morphology.dilate`'s separable pooling (window columns outer, rows
    inner), so it equals autograd through ``(dilate(b, r) * sites).sum()`` exactly, ties
    included, at a fraction of the cost (boundary sites are a few percent of the pixels).
    """
    N, C, H, W = b.shape
    site = sites.nonzero()  # [K, 4]
    K, k = site.shape[0], 2 * r + 1
    Hp, Wp = H + 2 * r, W + 2 * r
    off = torch.arange(-r, r + 1, device=b.device)
    # window offsets in the padded map, columns outer and rows inner
    offsets = (off.view(1, k) * Wp + off.view(k, 1)).reshape(1, -1)
    chosen = torch.empty(K, dtype=torch.int64, device=b.device)
    chunk = max(1, (1 << 22) // (k * k))
    with torch.no_grad():
        # b >= 0, so a -1 border never wins: every window max lies inside the image
        padded = F.pad(b.detach(), (r, r, r, r), value=-1.0).reshape(-1)
        nc = site[:, 0] * C + site[:, 1]
        centre = (nc * Hp + site[:, 2] + r) * Wp + site[:, 3] + r
        for s in range(0, K, chunk):
            flat = centre[s:s + chunk, None] + offsets
            best = flat.gather(1, padded[flat].argmax(1, keepdim=True)).view(-1)
            rem = best - nc[s:s + chunk] * (Hp * Wp)
            chosen[s:s + chunk] = (nc[s:s + chunk] * H + rem // Wp - r) * W + rem % Wp - r
    return b.reshape(-1)[chosen], site[:, 1]


class _SoftBoundary(torch.autograd.Function):
    """BF1's soft predicted boundary b = clamp(XOR(p, e), min=0), fused and blocked.

    z [N, C, H, W] logits (any float dtype), tables (h1, h2, h3, h4) CurveTables in the compute
    dtype cd; p = softmax(z) in cd, e = erode3x3(p), b = h3(p) + h4(e) - h3(p) h4(e)
    - h1(p) h2(e), clamped at 0. Returns b [N, C, H, W] in cd.

    Forward evaluates the four curves and their derivatives once, block by block, and saves
    z plus db/dp and db/de (clamp mask applied); backward recomputes only the softmax and the
    erosion's max-pool indices (ties route exactly as autograd through erode3x3 does).
    """

    @staticmethod
    def forward(ctx, z, cd, t1, t2, t3, t4):  # noqa: D401
        with torch.no_grad():
            p = torch.softmax(z.to(cd), dim=1)
            e = _erode3x3(p).contiguous()
            pf, ef = p.view(-1), e.view(-1)
            out = torch.empty_like(pf)
            ga = torch.empty_like(pf)  # d b / d p (direct), 0 where the clamp is active
            gb = ef  # d b / d e, written over e block by block (e is read first)
            block = min(pf.numel(), _CPU_BLOCK if z.device.type != "cuda" else _GPU_BLOCK)
            ws = Workspace(block, cd, z.device)
            h1, d1, h2, d2, h3, d3, h4, d4 = (torch.empty(block, dtype=cd, device=z.device)
                                              for _ in range(8))
            for i in range(0, pf.numel(), block):
                j = min(pf.numel(), i + block)
                m = j - i
                xp, xe, ob = pf[i:j], ef[i:j], out[i:j]
                evaluate_table_into(t1, xp, h1[:m], d1[:m], ws)
                evaluate_table_into(t2, xe, h2[:m], d2[:m], ws)
                evaluate_table_into(t3, xp, h3[:m], d3[:m], ws)
                evaluate_table_into(t4, xe, h4[:m], d4[:m], ws)
                # same operation order as h3 + h4 - h3 h4 - h1 h2
                torch.add(h3[:m], h4[:m], out=ob)
                ob.sub_(torch.mul(h3[:m], h4[:m])).sub_(torch.mul(h1[:m], h2[:m]))
                keep = ob >= 0  # clamp(min=0) passes the gradient where raw >= 0
                # d/dp = h3'(p)(1 - h4(e)) - h1'(p) h2(e); d/de = h4'(e)(1 - h3(p)) - h1(p) h2'(e)
                a = torch.rsub(h4[:m], 1.0).mul_(d3[:m]).sub_(d1[:m].mul_(h2[:m]))
                b = torch.rsub(h3[:m], 1.0).mul_(d4[:m]).sub_(h1[:m].mul_(d2[:m]))
                torch.mul(a, keep, out=ga[i:j])
                torch.mul(b, keep, out=gb[i:j])
                ob.clamp_(min=0.0)
            del p, e
        ctx.save_for_backward(z, ga, gb)
        ctx.cd = cd
        return out.view(z.shape)

    @staticmethod
    def backward(ctx, g):
        _first_order_only()
        z, ga, gb = ctx.saved_tensors
        cd = ctx.cd
        N, C, H, W = z.shape
        p = torch.softmax(z.to(cd), dim=1)
        _, idx = _erode3x3(p, indices=True)  # channels-last; its [N, C, H*W] view is valid
        g = g.to(cd).contiguous().view(N, C, H * W)
        gp = ga.view(N, C, H * W) * g
        gp.scatter_add_(2, idx.view(N, C, H * W), gb.view(N, C, H * W) * g)
        del idx
        gp = gp.view(N, C, H, W)
        gp.mul_(p)
        s = gp.sum(1, keepdim=True)
        gp.sub_(p.mul_(s))
        return gp.to(z.dtype), None, None, None, None, None


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


class SurrogateLoss(nn.Module):
    """Parameterized differentiable surrogate of a segmentation metric (or a sum of metrics).

    Args:
        metric: "miou", "fwiou", "biou", "bf1", "macc", "gacc" or a sum such as "miou+biou".
        num_classes: C. parameterization: "bezier" (default), "bezier1", "linear", "identity".
        theta: parameters (length ``search_space(metric, parameterization).dim``) or None for
            the identity curves (the naive relaxation).
        ignore_index: target value that never counts. boundary_tolerance: BIoU/BF1 radius (px).
        sync: "none" (default): the statistics are pooled over the local mini-batch (the
            paper's per-GPU pooling). "ddp": the per-class sums (I_c, U_c, BF1's soft counts,
            the counts that decide the class sets) are summed over the ranks of the default
            torch.distributed group before the ratios, so every rank's loss is the loss of the
            global batch, and its gradient, once DDP has averaged it over the ranks, is the
            global-batch gradient (each rank's logits get ``world_size`` times their share;
            :mod:`autoloss_ray.distributed`). Needs an initialized process group at forward
            time and the same loss on every rank; one all-reduce of a few [C] vectors per
            metric term. Not stored by :meth:`to_dict` (a runtime choice, like the device).
        boundary_classes: "all" (default) or "foreground": the BIoU band is built from the
            target boundaries of the classes other than ``background_index`` (default 0) and
            BF1 averages over those classes only, as the official release does with
            ``drop_bg`` on VOC (see :func:`autoloss_ray.metrics.evaluate`).
        nonfinite: what ``score``/``forward`` do with NaN or +inf logits: ``"propagate"``
            (default) gives a NaN/inf loss, as a diverged network's loss should look (the
            proxy task stops a trial on a non-finite loss); ``"raise"`` raises ValueError
            saying how many logits are non-finite. -inf logits are a legal zero probability
            either way.

    ``score(logits [N, C, h, w], target [N, H, W])`` -> scalar tensor (sum of the metrics'
    soft scores); ``forward`` -> sum of the per-metric losses 1 - score_m.
    """

    def __init__(
        self,
        metric: str,
        *,
        num_classes: int,
        parameterization: str = "bezier",
        theta: Any = None,
        ignore_index: int = 255,
        boundary_tolerance: int = 5,
        sync: str = "none",
        boundary_classes: str = "all",
        background_index: int = 0,
        nonfinite: str = "propagate",
    ) -> None:
        super().__init__()
        self.sync = check_sync(sync)
        if nonfinite not in ("propagate", "raise"):
            raise ValueError(f"nonfinite must be 'propagate' or 'raise', got {nonfinite!r}")
        self.nonfinite = nonfinite
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
        ):
            raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
        if (isinstance(boundary_tolerance, bool) or not isinstance(boundary_tolerance, int)
                or boundary_tolerance < 0):
            raise ValueError(
                f"boundary_tolerance must be an int >= 0 (pixels), got {boundary_tolerance!r}"
            )
        self.space = search_space(metric, parameterization)
        self.metric = self.space.metric
        self.terms = parse_metric(self.metric)
        self.parameterization = self.space.parameterization
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.boundary_tolerance = int(boundary_tolerance)
        self._background = check_boundary_classes(boundary_classes, background_index,
                                                  self.num_classes)
        self.boundary_classes = boundary_classes
        self.background_index = int(background_index)
        th = self.space.init.copy() if theta is None else self.space.validate(theta)
        self.register_buffer("_theta", torch.tensor(th, dtype=torch.float64), persistent=True)
        self._tables: dict[tuple[str, str], CurveTable] = {}
        self._tables_key: tuple | None = None

    # -- properties --------------------------------------------------------------------------
    @property
    def search_space(self) -> SearchSpace:
        return self.space

    @property
    def theta(self) -> np.ndarray:
        """A numpy copy of the parameters."""
        return self._theta.detach().cpu().numpy().copy()

    def extra_repr(self) -> str:
        return (f"metric={self.metric!r}, num_classes={self.num_classes}, "
                f"parameterization={self.parameterization!r}, ignore_index={self.ignore_index}"
                + (f", sync={self.sync!r}" if self.sync != "none" else ""))

    def _synced(self, cd: torch.dtype, *sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-class sums [C] summed over the ranks when ``sync="ddp"`` (one all-reduce of
        their stack, in the compute dtype; the gradient flows to the differentiable ones), else
        unchanged."""
        if self.sync == "none":
            return sums
        return tuple(all_reduce_sum(torch.stack([x.to(cd) for x in sums])).unbind(0))

    def curve_tables(self) -> dict[tuple[str, str], CurveTable]:
        """(metric, curve) -> CurveTable (float64, CPU), rebuilt when theta changes."""
        key = (self._theta._version, self._theta.data_ptr())
        if key != self._tables_key:
            par = get_parameterization(self.parameterization)
            th = self._theta.detach().cpu()
            self._tables = {}
            for term, curve, sl in self.space.slices:
                with torch.no_grad():
                    self._tables[(term, curve)] = (
                        IDENTITY_TABLE if par.name == "identity" else par.table(th[sl])
                    )
            self._tables_key = key
        return self._tables

    # -- checks ------------------------------------------------------------------------------
    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
            raise TypeError(f"logits must be a floating torch.Tensor [N, C, H, W], got "
                            f"{type(logits).__name__}"
                            + (f" of dtype {logits.dtype}" if isinstance(logits, torch.Tensor)
                               else ""))
        if not isinstance(target, torch.Tensor) or target.dtype.is_floating_point \
                or target.dtype.is_complex:
            raise TypeError("target must be an integer torch.Tensor [N, H, W] of class labels, "
                            f"got {type(target).__name__}"
                            + (f" of dtype {target.dtype}" if isinstance(target, torch.Tensor)
                               else ""))
        if logits.dim() != 4:
            raise ValueError(f"logits must be [N, C, H, W], got shape {tuple(logits.shape)}")
        if target.dim() != 3:
            raise ValueError(f"target must be [N, H, W], got shape {tuple(target.shape)}")
        if logits.shape[0] != target.shape[0]:
            raise ValueError(
                f"logits and target must have the same batch size, got logits "
                f"{tuple(logits.shape)} and target {tuple(target.shape)}"
            )
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits have {logits.shape[1]} channels but num_classes={self.num_classes}"
            )
        if target.numel() == 0 or logits.numel() == 0:
            raise ValueError(f"empty input: logits {tuple(logits.shape)}, target "
                             f"{tuple(target.shape)}")
        if self.nonfinite == "raise":
            bad = torch.isnan(logits) | (logits == float("inf"))
            if bool(bad.any()):
                raise ValueError(
                    f"logits hold {int(bad.sum())} NaN or +inf value(s) of "
                    f"{logits.numel()} (nonfinite='raise'); the network has diverged"
                )
        if target.device != logits.device:
            target = target.to(logits.device)
        target = target.to(torch.int64)
        C = self.num_classes
        lo, hi = (int(v) for v in torch.aminmax(target))
        if lo < 0 or hi >= C:
            bad = (target < 0) | (target >= C)
            if self.ignore_index is not None:
                bad &= target != self.ignore_index
            if bool(bad.any()):
                vals = torch.unique(target[bad])[:5].tolist()
                raise ValueError(
                    f"target has labels {vals} outside 0..{C - 1} that are not "
                    f"ignore_index={self.ignore_index}"
                )
        if logits.shape[2:] != target.shape[1:]:
            logits = F.interpolate(logits, size=tuple(target.shape[1:]), mode="bilinear",
                                   align_corners=False)
        return logits, target

    # -- scores ------------------------------------------------------------------------------
    def score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of the soft scores of the metric terms (each in [0, 1]); a scalar tensor."""
        logits, target = self._check(logits, target)
        tables = self.curve_tables()
        C = self.num_classes
        with torch.autocast(device_type=logits.device.type, enabled=False):
            if self.ignore_index is None:
                valid = torch.ones_like(target, dtype=torch.bool)
            else:
                valid = target != self.ignore_index
            tgt = torch.where(valid, target, 0)
            cd = _compute_dtype(logits)
            classes = torch.ones(C, dtype=torch.bool, device=logits.device)
            if self.ignore_index is not None and 0 <= self.ignore_index < C:
                classes[self.ignore_index] = False
            total = None
            fused = _use_native(logits)
            for term in self.terms:
                if term == "bf1":
                    s = self._bf1(logits, target, valid, classes, tables, cd, fused)
                else:
                    s = self._region(term, logits, target, tgt, valid, classes, tables, cd,
                                     fused)
                total = s if total is None else total + s
        return total

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return len(self.terms) - self.score(logits, target)

    def _region(self, term, logits, target, tgt, valid, classes, tables, cd, fused):
        C = self.num_classes
        if term == "biou":
            band = boundary_band(target, C, ignore_index=self.ignore_index,
                                 tolerance=self.boundary_tolerance,
                                 boundary_classes=self.boundary_classes,
                                 background_index=self.background_index)
            mask = valid & band
        else:
            mask = valid
        w = mask.to(cd)
        with torch.no_grad():  # target pixels per class
            n = torch.zeros(C, dtype=cd, device=w.device).index_add_(0, tgt.reshape(-1),
                                                                     w.reshape(-1))
        dev = logits.device
        and_table = tables[(term, "and")].to(dev, cd)
        or_table = tables[(term, "or")].to(dev, cd) if term in ("miou", "fwiou", "biou") else None
        if fused:
            # the kernels take the compute dtype; other dtypes (bf16 under autocast) convert
            z = logits.to(cd).contiguous()
            I, O, npred = _RegionStatsNative.apply(z, tgt.contiguous(), w.contiguous(),
                                                   and_table, or_table)
        elif _triton.usable(logits, cd):  # CUDA: fused Triton kernels (autoloss_ray._triton)
            I, O, npred = _triton.RegionStats.apply(logits.contiguous(), tgt.contiguous(),
                                                    w.contiguous(), and_table, or_table)
        else:
            z = logits if logits.is_contiguous() else logits.contiguous()
            I, O, npred = _RegionStats.apply(z, tgt.contiguous(), w, and_table, or_table)
        I, O, n, npred = self._synced(cd, I, O, n, npred)
        zero = I.sum() * 0.0  # keeps the graph (zero gradient) when a class set is empty
        if term == "gacc":
            tot = n.sum()
            return I.sum() / tot if tot > 0 else zero
        if term == "macc":
            sel = (n > 0) & classes
            k = int(sel.sum())
            return (I / n.clamp(min=1))[sel].sum() / k if k else zero
        iou = I / (O + n).clamp(min=_EPS)
        if term == "fwiou":
            tot = n.sum()
            return (iou * n * classes).sum() / tot if tot > 0 else zero
        sel = ((n > 0) | (npred > 0)) & classes
        k = int(sel.sum())
        return iou[sel].sum() / k if k else zero

    def _bf1(self, logits, target, valid, classes, tables, cd, fused) -> torch.Tensor:
        counts = self._bf1_counts_native if fused else self._bf1_counts
        n_p, m_p, m_g, n_g, n_p_hard = self._synced(cd, *counts(logits, target, valid, tables,
                                                                 cd))
        sel = ((n_p_hard > 0) | (n_g > 0)) & classes
        if self._background is not None:  # boundary_classes="foreground"
            sel[self._background] = False
        prec = m_p / n_p.clamp(min=_EPS)
        rec = m_g / n_g.clamp(min=_EPS)
        f1 = 2.0 * prec * rec / (prec + rec).clamp(min=_EPS)
        k = int(sel.sum())
        if k == 0:
            return f1.sum() * 0.0
        return f1[sel].sum() / k

    def _bf1_counts(self, logits, target, valid, tables, cd):
        """BF1's soft counts [C] (n_p, m_p, m_g, n_g) and the predicted boundary pixels per
        class n_p_hard, in torch ops (GPU, and the CPU fallback)."""
        C = self.num_classes
        with torch.no_grad():
            pred = _argmax1(logits)
        r = self.boundary_tolerance
        v = valid.unsqueeze(1).to(cd)  # [N, 1, H, W]
        dev = logits.device
        z = logits if logits.is_contiguous() else logits.contiguous()
        b = _SoftBoundary.apply(z, cd, *(tables[("bf1", k)].to(dev, cd)
                                         for k in ("h1", "h2", "h3", "h4")))
        with torch.no_grad():
            # exact target boundary; the ignore value is not a class (no boundary of its own)
            tmap = torch.where(valid, target, -1) if self.ignore_index is not None else target
            tclass = tmap.unsqueeze(1) == torch.arange(C, device=target.device).view(1, C, 1, 1)
            bg = _boundaries_bool(tclass)
            dbg = _dilate_bool(bg, r).to(cd)
            bgv = (bg & valid.unsqueeze(1)).to(cd)
            n_g = bgv.sum((0, 2, 3))
            pclass = pred.unsqueeze(1) == torch.arange(C, device=pred.device).view(1, C, 1, 1)
            n_p_hard = (_boundaries_bool(pclass) & valid.unsqueeze(1)).sum((0, 2, 3))
            del tclass, pclass, bg
        bv = b * v
        n_p = bv.sum((0, 2, 3))
        m_p = (bv * dbg).sum((0, 2, 3))
        # m_g = sum(dilate(b, r) * bgv): read the dilation at the target-boundary sites only
        vals, cls = _window_max_at(b, bgv > 0, r)
        m_g = torch.zeros(C, dtype=b.dtype, device=b.device).index_add(0, cls, vals)
        return n_p, m_p, m_g, n_g, n_p_hard

    def _bf1_counts_native(self, logits, target, valid, tables, cd):
        """:meth:`_bf1_counts` by the fused CPU kernels (same values; boundaries from label
        maps)."""
        C = self.num_classes
        z = logits.to(cd).contiguous()
        N, _, H, W = z.shape
        with torch.no_grad():
            tmap = torch.where(valid, target, -1) if self.ignore_index is not None else target
            site = _label_sites(tmap, valid)
            v = valid.to(cd).contiguous()
        pred = torch.empty((N, H, W), dtype=torch.int64)
        n_p, m_p, m_g, n_g = _BF1Native.apply(
            z, pred, v, site, self.boundary_tolerance,
            *(tables[("bf1", k)].to("cpu", cd) for k in ("h1", "h2", "h3", "h4")))
        with torch.no_grad():
            psite = _label_sites(pred, valid)
            n_p_hard = torch.bincount(psite[psite >= 0].long(), minlength=C)
        return n_p, m_p, m_g, n_g, n_p_hard

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self, meta: dict | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "metric": self.metric,
            "parameterization": self.parameterization,
            "theta": [float(v) for v in self.theta],
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "boundary_tolerance": self.boundary_tolerance,
            "boundary_classes": self.boundary_classes,
            "background_index": self.background_index,
        }
        if meta is not None:
            d["meta"] = meta
        return d

    def to_file(self, path: str | os.PathLike, *, meta: dict | None = None) -> None:
        """Write the loss as human-readable JSON (atomically)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path!r} is a directory; give a .json file path")
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                json.dump(self.to_dict(meta), f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "SurrogateLoss":
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ValueError(f"not an autoloss-ray loss (expected format {FILE_FORMAT!r})")
        if int(data.get("version", 0)) > FILE_VERSION:
            raise ValueError(f"loss file version {data.get('version')} is newer than "
                             f"supported ({FILE_VERSION})")
        missing = [k for k in ("metric", "parameterization", "theta") if k not in data]
        if missing:
            raise ValueError(f"loss file lacks {missing}")
        kw: dict[str, Any] = {
            "parameterization": data["parameterization"],
            "theta": data["theta"],
        }
        for key in ("num_classes", "ignore_index", "boundary_tolerance", "boundary_classes",
                    "background_index"):
            if key in data:
                kw[key] = data[key]
        kw.update(overrides)
        if kw.get("num_classes") is None:
            raise ValueError("num_classes is neither in the file nor given")
        return cls(data["metric"], **kw)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> "SurrogateLoss":
        """Load a loss written by :meth:`to_file`; keyword overrides replace stored values."""
        with open(os.fspath(path)) as f:
            data = json.load(f)
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_preset(cls, name: str, *, num_classes: int, **kwargs: Any) -> "SurrogateLoss":
        """The paper's searched loss for metric ``name`` (DESIGN section 7)."""
        from autoloss_ray.presets import preset_theta

        parameterization, theta = preset_theta(name)
        return cls(name, num_classes=num_classes, parameterization=parameterization,
                   theta=theta, **kwargs)


assert set(CURVES) == set(METRICS)
