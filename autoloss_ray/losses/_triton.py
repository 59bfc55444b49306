"""The region surrogates' statistics on CUDA by fused Triton kernels (issue 17).

Same inputs, outputs and forward/backward structure as ``losses._eager._RegionStats`` and the
C++ kernels (``_native/kernels.cpp``): one forward pass per pixel block computes the softmax
over classes, the AND curve at the target class's probability, the OR curve at every class,
and the per-class sums; it keeps only ``w h_and'(p_t)`` [N, H, W] and ``w (1 - y_c) h_or'(p_c)``
[N, C, H, W] for backward, which recomputes the softmax. All math is float32 whatever the
logits' dtype (bf16/fp16/fp32 logits are read as they are; the gradient has their dtype).

Sums are deterministic: each program writes its per-class partial sums ([programs, 3, C]) and
one torch sum over programs adds them (no atomics). NaN/inf logits propagate to the sums
(the softmax of a non-finite row is NaN), as on the eager path.

:func:`usable` says when ``SurrogateLoss`` takes this path: CUDA float32-compute logits, Triton
importable, ``AUTOLOSS_TRITON`` not ``0``. With ``TRITON_INTERPRET=1`` (set before Triton is
imported) the same kernels run on CPU tensors; the tests check them that way against the eager
path.
"""

from __future__ import annotations

import os

import torch

from autoloss_ray.losses.parameterizations import SFLOOR, CurveTable

try:  # pragma: no cover - depends on the installation
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except Exception:  # noqa: BLE001 - any import failure means "not available"
    HAVE_TRITON = False

__all__ = ["HAVE_TRITON", "RegionStats", "usable"]

BLOCK = 1024  # pixels per program


def usable(z: torch.Tensor, cd: torch.dtype) -> bool:
    """True when the region statistics of logits ``z`` (compute dtype ``cd``) run here."""
    return (HAVE_TRITON and z.is_cuda and cd == torch.float32
            and os.environ.get("AUTOLOSS_TRITON", "1") != "0"
            and z[0].numel() < 2**31)


def _curve_args(table: CurveTable | None):
    """(bounds, coef, nb, s2, identity) of a curve for the kernels (dummies when unused)."""
    if table is None or table.is_identity:
        return None, None, 1, 1, True
    b = table.bounds.to(torch.float32).contiguous()
    c = table.coef.to(torch.float32).contiguous()
    return b, c, int(b.numel()), int(c.shape[1]), False


if HAVE_TRITON:

    @triton.jit
    def _curve(x, b_ptr, c_ptr, NB: tl.constexpr, S2: tl.constexpr, SFLOOR: tl.constexpr):
        """h(x), h'(x) of a CurveTable (evaluate_table_into's formula, float32)."""
        idx = tl.zeros(x.shape, dtype=tl.int32)
        for j in tl.static_range(NB):  # bucketize(right=True): bounds <= x
            idx += (x >= tl.load(b_ptr + j)).to(tl.int32)
        A = tl.load(c_ptr + idx)
        B = tl.load(c_ptr + S2 + idx)
        Cc = tl.load(c_ptr + 2 * S2 + idx)
        Y0 = tl.load(c_ptr + 3 * S2 + idx)
        YB = tl.load(c_ptr + 4 * S2 + idx)
        YA = tl.load(c_ptr + 5 * S2 + idx)
        u = B + A * x
        s = tl.maximum(u + Cc * (Cc - 2.0 * u), SFLOOR)
        r = tl.sqrt(s)
        t = u / (Cc + r)
        h = (YB + YA * t) * t + Y0
        d = (YB + 2.0 * YA * t) * A * 0.5 / r
        return h, d

    @triton.jit
    def _softmax_stats(zb, m, C, HW):
        """Row max, argmax (first maximum) and 1 / sum exp over the C classes of a block."""
        mx = tl.full(m.shape, float("-inf"), dtype=tl.float32)
        am = tl.zeros(m.shape, dtype=tl.int32)
        for c in range(C):
            v = tl.load(zb + c * HW, mask=m, other=0.0).to(tl.float32)
            gt = v > mx
            am = tl.where(gt, c, am)
            mx = tl.where(gt, v, mx)
        s = tl.zeros(m.shape, dtype=tl.float32)
        for c in range(C):
            v = tl.load(zb + c * HW, mask=m, other=0.0).to(tl.float32)
            s += tl.exp(v - mx)
        return mx, am, 1.0 / s

    @triton.jit
    def _region_fwd(z_ptr, t_ptr, w_ptr, part_ptr, gand_ptr, gor_ptr,
                    ab_ptr, ac_ptr, ob_ptr, oc_ptr, C, HW, NPB,
                    AND_NB: tl.constexpr, AND_S2: tl.constexpr, AND_ID: tl.constexpr,
                    USE_OR: tl.constexpr, OR_NB: tl.constexpr, OR_S2: tl.constexpr,
                    OR_ID: tl.constexpr, SFLOOR: tl.constexpr, BLOCK: tl.constexpr):
        pb = tl.program_id(0)
        n = tl.program_id(1)
        offs = pb * BLOCK + tl.arange(0, BLOCK)
        m = offs < HW
        n64 = n.to(tl.int64)
        zb = z_ptr + n64 * C * HW + offs
        pix = n64 * HW + offs
        t = tl.load(t_ptr + pix, mask=m, other=0).to(tl.int32)
        w = tl.load(w_ptr + pix, mask=m, other=0.0)
        mx, am, inv = _softmax_stats(zb, m, C, HW)
        pt = tl.exp(tl.load(zb + t * HW, mask=m, other=0.0).to(tl.float32) - mx) * inv
        if AND_ID:
            ha = pt
            da = tl.full(pt.shape, 1.0, dtype=tl.float32)
        else:
            ha, da = _curve(pt, ab_ptr, ac_ptr, AND_NB, AND_S2, SFLOOR)
        tl.store(gand_ptr + pix, w * da, mask=m)
        wha = w * ha
        part = part_ptr + (n64 * NPB + pb) * 3 * C
        for c in range(C):
            sel = t == c
            tl.store(part + c, tl.sum(tl.where(sel, wha, 0.0), axis=0))
            tl.store(part + 2 * C + c, tl.sum(tl.where(am == c, w, 0.0), axis=0))
            if USE_OR:
                p = tl.exp(tl.load(zb + c * HW, mask=m, other=0.0).to(tl.float32) - mx) * inv
                if OR_ID:
                    ho = p
                    do = tl.full(p.shape, 1.0, dtype=tl.float32)
                else:
                    ho, do = _curve(p, ob_ptr, oc_ptr, OR_NB, OR_S2, SFLOOR)
                wo = tl.where(sel, 0.0, w)
                tl.store(part + C + c, tl.sum(wo * ho, axis=0))
                tl.store(gor_ptr + n64 * C * HW + c * HW + offs, wo * do, mask=m)

    @triton.jit
    def _region_bwd(z_ptr, t_ptr, gand_ptr, gor_ptr, gI_ptr, gO_ptr, grad_ptr, C, HW,
                    USE_AND: tl.constexpr, USE_OR: tl.constexpr, BLOCK: tl.constexpr):
        pb = tl.program_id(0)
        n = tl.program_id(1)
        offs = pb * BLOCK + tl.arange(0, BLOCK)
        m = offs < HW
        n64 = n.to(tl.int64)
        zb = z_ptr + n64 * C * HW + offs
        gb = gor_ptr + n64 * C * HW + offs
        pix = n64 * HW + offs
        t = tl.load(t_ptr + pix, mask=m, other=0).to(tl.int32)
        mx, am, inv = _softmax_stats(zb, m, C, HW)
        if USE_AND:
            a = tl.load(gI_ptr + t, mask=m, other=0.0) * tl.load(gand_ptr + pix, mask=m, other=0.0)
        else:
            a = tl.zeros(m.shape, dtype=tl.float32)
        # dL/dp_c = g_or_c gO_c + [c == t] a;  dL/dz_c = p_c (dL/dp_c - sum_k p_k dL/dp_k)
        dot = tl.zeros(m.shape, dtype=tl.float32)
        for c in range(C):
            p = tl.exp(tl.load(zb + c * HW, mask=m, other=0.0).to(tl.float32) - mx) * inv
            gp = tl.where(t == c, a, 0.0)
            if USE_OR:
                gp += tl.load(gb + c * HW, mask=m, other=0.0) * tl.load(gO_ptr + c)
            dot += p * gp
        for c in range(C):
            p = tl.exp(tl.load(zb + c * HW, mask=m, other=0.0).to(tl.float32) - mx) * inv
            gp = tl.where(t == c, a, 0.0)
            if USE_OR:
                gp += tl.load(gb + c * HW, mask=m, other=0.0) * tl.load(gO_ptr + c)
            g = p * (gp - dot)
            tl.store(grad_ptr + n64 * C * HW + c * HW + offs,
                     g.to(grad_ptr.dtype.element_ty), mask=m)


class RegionStats(torch.autograd.Function):
    """``losses._eager._RegionStats`` by the Triton kernels: z [N, C, H, W] contiguous logits
    (float32/bf16/fp16), tgt [N, H, W] int64, w [N, H, W] float32, and_table (CurveTable,
    float32) and or_table (CurveTable or None). Returns I [C], O [C], npred [C] (float32)."""

    @staticmethod
    def forward(ctx, z, tgt, w, and_table, or_table):  # noqa: D401
        N, C, H, W = z.shape
        HW = H * W
        dev = z.device
        npb = triton.cdiv(HW, BLOCK)
        part = torch.empty((N * npb, 3, C), dtype=torch.float32, device=dev)
        use_or = or_table is not None
        g_and = torch.empty((N, H, W), dtype=torch.float32, device=dev)
        g_or = torch.empty((N, C, H, W), dtype=torch.float32, device=dev) if use_or else None
        ab, ac, anb, as2, aid = _curve_args(and_table)
        ob, oc, onb, os2, oid = _curve_args(or_table)
        dummy = w  # any float32 tensor for unused pointers
        if not use_or:
            part[:, 1].zero_()
        _region_fwd[(npb, N)](
            z, tgt, w, part, g_and, g_or if use_or else dummy,
            ab if ab is not None else dummy, ac if ac is not None else dummy,
            ob if ob is not None else dummy, oc if oc is not None else dummy,
            C, HW, npb,
            AND_NB=anb, AND_S2=as2, AND_ID=aid, USE_OR=use_or, OR_NB=onb, OR_S2=os2,
            OR_ID=oid or not use_or, SFLOOR=float(SFLOOR), BLOCK=BLOCK,
        )
        sums = part.sum(dim=0)
        I, O, npred = sums[0], sums[1], sums[2]
        ctx.save_for_backward(z, tgt, g_and, g_or)
        ctx.mark_non_differentiable(npred)
        return I, O, npred

    @staticmethod
    def backward(ctx, gI, gO, _gnpred):
        from autoloss_ray.losses._eager import _first_order_only

        _first_order_only()
        z, tgt, g_and, g_or = ctx.saved_tensors
        N, C, H, W = z.shape
        HW = H * W
        use_and = gI is not None
        use_or = g_or is not None and gO is not None
        grad = torch.empty(z.shape, dtype=z.dtype, device=z.device)
        gI = gI.to(torch.float32).contiguous() if use_and else g_and
        gO = gO.to(torch.float32).contiguous() if use_or else g_and
        _region_bwd[(triton.cdiv(HW, BLOCK), N)](
            z, tgt, g_and, g_or if use_or else g_and, gI, gO, grad, C, HW,
            USE_AND=use_and, USE_OR=use_or, BLOCK=BLOCK,
        )
        return grad, None, None, None, None
