"""BF1's soft predicted boundary and its two soft counts on CUDA by fused Triton kernels
(issue 17): the GPU counterpart of ``losses._eager._SoftBoundary`` followed by the ``n_p`` and
``m_p`` sums of ``losses._term_scores.bf1_counts``.

Kernels, all float32 math whatever the logits' dtype:

1. ``_stats``, one program per (pixel block, image): the softmax's row maximum and 1 / sum exp
   per pixel ([N, H, W] each; kept for backward) and the argmax (first maximum) per pixel.
2. ``_fwd``, one program per (pixel block, class, image): p = softmax at the pixel and its 3x3
   neighbours (recomputed from 1.), e = erode3x3(p) (outside the image ignored) with the
   window position of its first minimum in row-major order (the index ``max_pool2d`` of -p
   returns, so ties route as autograd through ``morphology.erode3x3``), the four curves, and
   b = clamp(h3(p) + h4(e) - h3(p) h4(e) - h1(p) h2(e), min=0). It writes b, db/dp and db/de
   (zero where the clamp is active), the window position (int8), and per-program partial
   sums of n_p = sum v b and m_p = sum v b dbg (dbg: the dilated target boundary).
3. ``_bwd_p``, one program per (pixel block, class, image): dL/dp_c at each pixel = its own
   db/dp G plus, from each 3x3 neighbour whose erosion minimum is this pixel, that
   neighbour's db/de G (a gather, so no atomics), with G = dL/db + v (dL/dn_p + dL/dm_p dbg).
4. ``_bwd_z``, one program per (pixel block, image): the softmax backward over classes,
   dL/dz_c = p_c (dL/dp_c - sum_k p_k dL/dp_k).

Sums are deterministic (partials per program, one torch sum). With ``TRITON_INTERPRET=1`` the
kernels run on CPU tensors; ``tests/losses/test_triton.py`` checks them against the eager path.
"""

from __future__ import annotations

import torch

from autoloss_ray.losses._triton import HAVE_TRITON, _curve_args
from autoloss_ray.losses.parameterizations import SFLOOR

__all__ = ["BF1Counts"]

BLOCK = 512  # pixels per program

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from autoloss_ray.losses._triton import _curve, _softmax_stats

    @triton.jit
    def _h(x, b_ptr, c_ptr, NB: tl.constexpr, S2: tl.constexpr, ID: tl.constexpr,
           SFLOOR: tl.constexpr):
        """h(x), h'(x) of a curve, or of the identity when ID."""
        if ID:
            h = x
            d = tl.full(x.shape, 1.0, dtype=tl.float32)
        else:
            h, d = _curve(x, b_ptr, c_ptr, NB, S2, SFLOOR)
        return h, d

    @triton.jit
    def _plane_block(C, H, W, BLOCK: tl.constexpr):
        """This program's pixel block of plane (image program_id(2), class program_id(1)):
        class, offsets, mask, row, column, the plane's element base, the image's pixel base."""
        c = tl.program_id(1)
        n64 = tl.program_id(2).to(tl.int64)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        return c, offs, offs < H * W, offs // W, offs % W, (n64 * C + c) * H * W, n64 * H * W

    @triton.jit
    def _neighbour(row, col, m, j: tl.constexpr, H, W):
        """Position j of each pixel's 3x3 window (rows outer, columns inner): its offset in
        the plane and whether it lies inside the image."""
        rr = row + (j // 3 - 1)
        cc = col + (j % 3 - 1)
        return rr * W + cc, m & (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)

    @triton.jit
    def _stats(z_ptr, mx_ptr, inv_ptr, pred_ptr, C, HW, BLOCK: tl.constexpr):
        pb = tl.program_id(0)
        n64 = tl.program_id(1).to(tl.int64)
        offs = pb * BLOCK + tl.arange(0, BLOCK)
        m = offs < HW
        mx, am, inv = _softmax_stats(z_ptr + n64 * C * HW + offs, m, C, HW)
        tl.store(mx_ptr + n64 * HW + offs, mx, mask=m)
        tl.store(inv_ptr + n64 * HW + offs, inv, mask=m)
        tl.store(pred_ptr + n64 * HW + offs, am.to(tl.int64), mask=m)

    @triton.jit
    def _fwd(z_ptr, mx_ptr, inv_ptr, v_ptr, dbg_ptr, b_ptr, ga_ptr, gb_ptr, idx_ptr, part_ptr,
             b1, c1, b2, c2, b3, c3, b4, c4, C, H, W, NPB,
             NB1: tl.constexpr, S21: tl.constexpr, ID1: tl.constexpr,
             NB2: tl.constexpr, S22: tl.constexpr, ID2: tl.constexpr,
             NB3: tl.constexpr, S23: tl.constexpr, ID3: tl.constexpr,
             NB4: tl.constexpr, S24: tl.constexpr, ID4: tl.constexpr,
             SFLOOR: tl.constexpr, BLOCK: tl.constexpr):
        c, offs, m, row, col, el0, st = _plane_block(C, H, W, BLOCK)
        zc = z_ptr + el0
        e = tl.full(offs.shape, float("inf"), dtype=tl.float32)
        k = tl.zeros(offs.shape, dtype=tl.int32)
        p = tl.zeros(offs.shape, dtype=tl.float32)
        for j in tl.static_range(9):
            q, inside = _neighbour(row, col, m, j, H, W)
            zq = tl.load(zc + q, mask=inside, other=0.0).to(tl.float32)
            pq = tl.exp(zq - tl.load(mx_ptr + st + q, mask=inside, other=0.0)) \
                * tl.load(inv_ptr + st + q, mask=inside, other=0.0)
            if j == 4:
                p = pq
            pq = tl.where(inside, pq, float("inf"))
            lt = pq < e
            k = tl.where(lt, j, k)
            e = tl.where(lt, pq, e)
        e = tl.where(m, e, 0.0)  # lanes past the end: keep them finite
        h1, d1 = _h(p, b1, c1, NB1, S21, ID1, SFLOOR)
        h2, d2 = _h(e, b2, c2, NB2, S22, ID2, SFLOOR)
        h3, d3 = _h(p, b3, c3, NB3, S23, ID3, SFLOOR)
        h4, d4 = _h(e, b4, c4, NB4, S24, ID4, SFLOOR)
        raw = (h3 + h4) - h3 * h4 - h1 * h2
        keep = raw >= 0.0
        b = tl.where(keep, raw, 0.0)
        ga = tl.where(keep, d3 * (1.0 - h4) - d1 * h2, 0.0)
        gb = tl.where(keep, d4 * (1.0 - h3) - h1 * d2, 0.0)
        el = el0 + offs
        tl.store(b_ptr + el, b, mask=m)
        tl.store(ga_ptr + el, ga, mask=m)
        tl.store(gb_ptr + el, gb, mask=m)
        tl.store(idx_ptr + el, k.to(tl.int8), mask=m)
        bv = tl.where(m, b * tl.load(v_ptr + st + offs, mask=m, other=0.0), 0.0)
        dbg = tl.load(dbg_ptr + el, mask=m, other=0).to(tl.float32)
        prog = tl.program_id(2).to(tl.int64) * NPB + tl.program_id(0)  # (image, block)
        part = part_ptr + prog * 2 * C + c
        tl.store(part, tl.sum(bv, axis=0))
        tl.store(part + C, tl.sum(bv * dbg, axis=0))

    @triton.jit
    def _g(gbout_ptr, v_ptr, dbg_ptr, el, pix, m, gnp, gmp, HAS_GB: tl.constexpr):
        """dL/db at the given elements: the dense gradient plus the two counts' parts."""
        g = tl.load(v_ptr + pix, mask=m, other=0.0) * (
            gnp + gmp * tl.load(dbg_ptr + el, mask=m, other=0).to(tl.float32))
        if HAS_GB:
            g += tl.load(gbout_ptr + el, mask=m, other=0.0)
        return g

    @triton.jit
    def _bwd_p(gbout_ptr, v_ptr, dbg_ptr, ga_ptr, gb_ptr, idx_ptr, gnp_ptr, gmp_ptr, gp_ptr,
               C, H, W, HAS_GB: tl.constexpr, BLOCK: tl.constexpr):
        c, offs, m, row, col, base, st = _plane_block(C, H, W, BLOCK)
        gnp = tl.load(gnp_ptr + c)
        gmp = tl.load(gmp_ptr + c)
        g = _g(gbout_ptr, v_ptr, dbg_ptr, base + offs, st + offs, m, gnp, gmp, HAS_GB)
        acc = tl.load(ga_ptr + base + offs, mask=m, other=0.0) * g
        for j in tl.static_range(9):  # neighbour s at position j; this pixel is s's 8 - j
            q, inside = _neighbour(row, col, m, j, H, W)
            hit = inside & (tl.load(idx_ptr + base + q, mask=inside, other=-1).to(tl.int32)
                            == 8 - j)
            gs = _g(gbout_ptr, v_ptr, dbg_ptr, base + q, st + q, hit, gnp, gmp, HAS_GB)
            acc += tl.where(hit, tl.load(gb_ptr + base + q, mask=hit, other=0.0) * gs, 0.0)
        tl.store(gp_ptr + base + offs, acc, mask=m)

    @triton.jit
    def _bwd_z(z_ptr, mx_ptr, inv_ptr, gp_ptr, grad_ptr, C, HW, BLOCK: tl.constexpr):
        pb = tl.program_id(0)
        n64 = tl.program_id(1).to(tl.int64)
        offs = pb * BLOCK + tl.arange(0, BLOCK)
        m = offs < HW
        zb = z_ptr + n64 * C * HW + offs
        gb = gp_ptr + n64 * C * HW + offs
        mx = tl.load(mx_ptr + n64 * HW + offs, mask=m, other=0.0)
        inv = tl.load(inv_ptr + n64 * HW + offs, mask=m, other=0.0)
        dot = tl.zeros(offs.shape, dtype=tl.float32)
        for c in range(C):
            p = tl.exp(tl.load(zb + c * HW, mask=m, other=0.0).to(tl.float32) - mx) * inv
            dot += p * tl.load(gb + c * HW, mask=m, other=0.0)
        for c in range(C):
            p = tl.exp(tl.load(zb + c * HW, mask=m, other=0.0).to(tl.float32) - mx) * inv
            g = p * (tl.load(gb + c * HW, mask=m, other=0.0) - dot)
            tl.store(grad_ptr + n64 * C * HW + c * HW + offs,
                     g.to(grad_ptr.dtype.element_ty), mask=m)


class BF1Counts(torch.autograd.Function):
    """BF1's soft boundary and counts by the Triton kernels.

    Inputs: z [N, C, H, W] contiguous logits (float32/bf16/fp16), v [N, H, W] float32 valid
    pixels (1/0), dbg [N, C, H, W] uint8 (the target boundary dilated by the tolerance), and
    the four float32 CurveTables (h1, h2, h3, h4). Returns b [N, C, H, W] float32 (the soft
    predicted boundary, differentiable), n_p [C] = sum v b, m_p [C] = sum v b dbg, and pred
    [N, H, W] int64 = argmax over classes (not differentiable).
    """

    @staticmethod
    def forward(ctx, z, v, dbg, t1, t2, t3, t4):  # noqa: D401
        N, C, H, W = z.shape
        HW = H * W
        dev = z.device
        npb = triton.cdiv(HW, BLOCK)
        mx = torch.empty((N, H, W), dtype=torch.float32, device=dev)
        inv = torch.empty_like(mx)
        pred = torch.empty((N, H, W), dtype=torch.int64, device=dev)
        _stats[(npb, N)](z, mx, inv, pred, C, HW, BLOCK=BLOCK)
        b = torch.empty((N, C, H, W), dtype=torch.float32, device=dev)
        ga, gb = torch.empty_like(b), torch.empty_like(b)
        idx = torch.empty((N, C, H, W), dtype=torch.int8, device=dev)
        part = torch.empty((N * npb, 2, C), dtype=torch.float32, device=dev)
        curves = []
        consts = {}
        for i, t in enumerate((t1, t2, t3, t4), start=1):
            bb, cc, nb, s2, ident = _curve_args(t)
            curves += [bb if bb is not None else v, cc if cc is not None else v]
            consts.update({f"NB{i}": nb, f"S2{i}": s2, f"ID{i}": ident})
        _fwd[(npb, C, N)](z, mx, inv, v, dbg, b, ga, gb, idx, part, *curves, C, H, W, npb,
                          SFLOOR=float(SFLOOR), BLOCK=BLOCK, **consts)
        sums = part.sum(dim=0)
        ctx.save_for_backward(z, mx, inv, v, dbg, ga, gb, idx)
        ctx.mark_non_differentiable(pred)
        ctx.set_materialize_grads(False)  # an unused output costs no zero tensor in backward
        return b, sums[0], sums[1], pred

    @staticmethod
    def backward(ctx, gbout, gnp, gmp, _gpred):
        from autoloss_ray.losses._eager import _first_order_only

        _first_order_only()
        z, mx, inv, v, dbg, ga, gb, idx = ctx.saved_tensors
        if gbout is None and gnp is None and gmp is None:
            return (None,) * 7
        N, C, H, W = z.shape
        HW = H * W
        npb = triton.cdiv(HW, BLOCK)
        zeros = torch.zeros(C, dtype=torch.float32, device=z.device)
        gnp = zeros if gnp is None else gnp.to(torch.float32).contiguous()
        gmp = zeros if gmp is None else gmp.to(torch.float32).contiguous()
        has_gb = gbout is not None
        gbout = gbout.to(torch.float32).contiguous() if has_gb else ga
        gp = torch.empty((N, C, H, W), dtype=torch.float32, device=z.device)
        _bwd_p[(npb, C, N)](gbout, v, dbg, ga, gb, idx, gnp, gmp, gp, C, H, W,
                            HAS_GB=has_gb, BLOCK=BLOCK)
        grad = torch.empty(z.shape, dtype=z.dtype, device=z.device)
        _bwd_z[(npb, N)](z, mx, inv, gp, grad, C, HW, BLOCK=BLOCK)
        return grad, None, None, None, None, None, None
