"""Bridges from :class:`~autoloss_ray.losses.SurrogateLoss` to the fused C++ CPU kernels
(built and loaded by :mod:`autoloss_ray.native`): the autograd Functions
:class:`_RegionStatsNative` and :class:`_BF1Native`, the curve and dtype marshalling, the
label-map boundary sites and the rule for when the kernels are used (:func:`_use_native`)."""

from __future__ import annotations

import ctypes

import torch

from autoloss_ray import native
from autoloss_ray.losses._eager import _first_order_only


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


class _NonFiniteLogits(Exception):
    """A kernel's forward found NaN or infinite logits: its results are void (the kernels
    are built with -ffast-math, which promises nothing for them); the caller recomputes on
    the eager path, where they propagate to the loss as autograd would."""


class _RegionStatsNative(torch.autograd.Function):
    """:class:`_RegionStats` by the fused CPU kernels (:mod:`autoloss_ray.native`).

    Same inputs and outputs, plus (no gradient) n [C] = sum of w over target == c, summed
    in the same pass; z must be a contiguous CPU tensor in the compute dtype (float32 or
    float64). Saves z, w h_and'(p_t) [N, H, W] and w (1 - y) h_or'(p) [N, C, H, W]; the
    backward kernel recomputes the softmax per tile.
    """

    @staticmethod
    def forward(ctx, z, tgt, w, and_table, or_table):  # noqa: D401
        lib = native.library()
        N, C, H, W = z.shape
        cd = z.dtype
        HW = H * W
        g_and = torch.empty((N, H, W), dtype=cd) if and_table is not None else None
        g_or = native.empty((N, C, H, W), cd) if or_table is not None else None
        ranges = native.parallel_ranges(N * HW)
        acc = torch.zeros((len(ranges), 4 * C + 1), dtype=torch.float64)
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
        tot = acc.sum(0)
        if tot[4 * C].item():
            raise _NonFiniteLogits
        I, O, npred, n = tot[:4 * C].view(4, C).to(cd).unbind(0)
        ctx.save_for_backward(z, tgt, g_and, g_or)
        ctx.mark_non_differentiable(npred, n)
        ctx.lib = lib
        return I, O, npred, n

    @staticmethod
    def backward(ctx, gI, gO, _gnpred, _gn):
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
        grad = native.empty(z.shape, cd)
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
    tolerance; t1..t4 the curves h1..h4. Returns n_p, m_p, m_g (differentiable) and n_g,
    n_ph (not), each [C], with b = clamp(XOR(p, erode3x3(p)), 0): n_p = sum v b_c, m_p = sum
    v b_c dilate(bg_c, r), m_g = sum of dilate(b_c, r) over the class-c sites, n_g = class-c
    sites, n_ph = valid boundary pixels of the predicted class c (as :func:`_label_sites` of
    pred counts them).

    b is made one class plane at a time and never stored; backward keeps z, db/dp, db/de
    ([N, C, H, W]), dilate(bg, r) as bytes and each site's window-maximum position, and
    recomputes the softmax and the erosion's first-minimum positions.
    """

    @staticmethod
    def forward(ctx, z, pred, v, site, r, t1, t2, t3, t4):  # noqa: D401
        lib = native.library()
        N, C, H, W = z.shape
        ga, gb = native.empty(z.shape, z.dtype), native.empty(z.shape, z.dtype)
        dil = native.empty((N, C, H, W), torch.uint8)
        arg = torch.empty((N, H, W), dtype=torch.int32)
        ranges = native.parallel_ranges(N, align=1)
        acc = torch.zeros((len(ranges), 5 * C + 1), dtype=torch.float64)
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
        tot = acc.sum(0)
        if tot[5 * C].item():
            raise _NonFiniteLogits
        n_p, m_p, m_g, n_g, n_ph = tot[:5 * C].view(5, C).to(z.dtype).unbind(0)
        ctx.save_for_backward(z, ga, gb, v, site, dil, arg)
        ctx.mark_non_differentiable(n_g, n_ph)
        ctx.lib = lib
        return n_p, m_p, m_g, n_g, n_ph

    @staticmethod
    def backward(ctx, gnp, gmp, gmg, _gng, _gnph):
        _first_order_only()
        lib = ctx.lib
        z, ga, gb, v, site, dil, arg = ctx.saved_tensors
        N, C, H, W = z.shape
        gs = [None if x is None else x.to(z.dtype).contiguous() for x in (gnp, gmp, gmg)]
        grad = native.empty(z.shape, z.dtype)
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
    valid = (valid.view(torch.uint8) if valid.dtype == torch.bool else valid.to(torch.uint8)
             ).contiguous()
    out = torch.empty((N, H, W), dtype=torch.int32)

    def work(_i, n0, n1):
        return lib.autoloss_label_sites(lab.data_ptr(), valid.data_ptr(), H, W, n0, n1,
                                        out.data_ptr())

    native.run_ranges(work, native.parallel_ranges(N, align=1))
    return out


def _target_prep(target: torch.Tensor, num_classes: int, ignore_index: int | None,
                 cd: torch.dtype, *, band_radius: int = -1, background: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """The region kernels' per-pixel inputs from a label map target int64 [N, H, W] in one
    pass (CPU kernel): ``(tgt, w, wb, bad)`` with tgt int64 the class (0 where the pixel is
    no valid class), w [N, H, W] in ``cd`` 1 at valid pixels (a class; not ``ignore_index``)
    and 0 elsewhere, wb (``band_radius >= 0``, else None) w times BIoU's band (exactly
    :func:`autoloss_ray.metrics.counts.checked_boundary_band` with that tolerance and
    ``background``), and bad the number of labels that are neither a class nor
    ``ignore_index`` (given weight 0 here; the caller raises on them)."""
    lib = native.library()
    N, H, W = target.shape
    t = target.contiguous()
    tgt = torch.empty((N, H, W), dtype=torch.int64)
    w = torch.empty((N, H, W), dtype=cd)
    wb = torch.empty((N, H, W), dtype=cd) if band_radius >= 0 else None
    ranges = native.parallel_ranges(N, align=1)
    bad = torch.zeros(len(ranges), dtype=torch.int64)
    # a value outside int64 is no label the target can hold
    has_ign = ignore_index is not None and -2**63 <= ignore_index < 2**63
    ign = int(ignore_index) if has_ign else 0
    bg = -1 if background is None else int(background)
    dt = _native_dtype(cd)

    def work(i, n0, n1):
        return lib.autoloss_target_prep(dt, t.data_ptr(), num_classes, int(has_ign), ign, H, W,
                                        band_radius, bg, n0, n1, tgt.data_ptr(), w.data_ptr(),
                                        native.ptr(wb), bad[i:].data_ptr())

    native.run_ranges(work, ranges)
    return tgt, w, wb, int(bad.sum())


def _native_capable(z) -> bool:
    """True when z is a CPU tensor and the kernels are available (what the label pass of
    :func:`_target_prep` needs; :func:`_use_native` decides the rest)."""
    return (isinstance(z, torch.Tensor) and z.device.type == "cpu"
            and native.library() is not None)


def _use_native(z: torch.Tensor) -> bool:
    """CPU logits go to the fused kernels when they are available and an image has fewer
    than 2^31 pixels. Non-finite logits are found by the kernels' forward passes themselves
    (:class:`_NonFiniteLogits`; no separate pass over the logits): the caller then takes the
    eager path, where NaN/inf propagate to the loss as autograd would."""
    if z.device.type != "cpu" or native.library() is None:
        return False
    return z.shape[2:].numel() < 2**31  # the kernels keep in-image offsets in int32
