"""The eager (torch) fused autograd Functions of :class:`~autoloss_ray.losses.SurrogateLoss`:
the blocked region statistics (:class:`_RegionStats`) and BF1's soft predicted boundary
(:class:`_SoftBoundary`), with the block softmax helpers they share with the other paths.
This is the GPU path and the CPU fallback of the native kernels (:mod:`._native`)."""

from __future__ import annotations

import torch

from autoloss_ray.losses._boundary import _argmax1, _erode3x3
from autoloss_ray.losses.parameterizations import Workspace, evaluate_table_into

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

