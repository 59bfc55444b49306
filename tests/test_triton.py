"""The CUDA path's Triton kernels (autoloss_ray.losses._triton), run on CPU by Triton's interpreter
(``TRITON_INTERPRET=1``, set in a subprocess before Triton is imported) and compared with the
eager PyTorch path: values and gradients of every region surrogate, every parameterization,
random admissible curves, float32 and bf16 logits, ignored pixels and empty classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")

SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import numpy as np
    import torch
    from autoloss_ray.losses import _triton
    from autoloss_ray.losses import surrogate as surrogates
    from autoloss_ray.parameterizations import PARAMETERIZATIONS
    from autoloss_ray.losses import SurrogateLoss, search_space

    def random_theta(space, rng):
        low, high = np.maximum(space.low, -4), np.minimum(space.high, 4)
        th = rng.uniform(low, high)
        faces = (rng.random(space.dim) < 0.2) & np.isfinite(space.low)
        th[faces] = np.where(rng.random(faces.sum()) < 0.5, space.low[faces], space.high[faces])
        return th

    surrogates._use_native = lambda z: False  # the reference: the eager torch path
    usable = _triton.usable
    rows = []
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    N, C, H, W = 2, 4, 5, 29  # 145 pixels per image: two programs, one partial
    _triton.BLOCK = 128
    pars = list(PARAMETERIZATIONS)  # every metric once, every parameterization twice or more
    cases = [(m, pars[i % len(pars)]) for i, m in enumerate(
        ("miou", "fwiou", "biou", "macc", "gacc", "miou", "macc", "biou"))]
    cases += [("miou+gacc", "bezier")]
    for k, (metric, par) in enumerate(cases):
        theta = random_theta(search_space(metric, par), rng)
        loss = SurrogateLoss(metric, num_classes=C, ignore_index=255, parameterization=par,
                             theta=theta, boundary_tolerance=2)
        dtype = torch.bfloat16 if k % 3 == 2 else torch.float32
        z = (3 * torch.randn(N, C, H, W, generator=g)).to(dtype)
        t = torch.randint(0, C - 1, (N, H, W), generator=g)  # class C-1 absent
        t[0, :2] = 255
        out = {}
        for name, flag in (("eager", False), ("triton", True)):
            _triton.usable = (lambda z, cd: True) if flag else (lambda z, cd: False)
            zz = z.clone().requires_grad_(True)
            v = loss(zz, t)
            v.backward()
            out[name] = (float(v), zz.grad.float())
        _triton.usable = usable
        rows.append(dict(metric=metric, par=par, dtype=str(dtype), eager=out["eager"][0],
                         triton=out["triton"][0],
                         grad_err=float((out["eager"][1] - out["triton"][1]).abs().max()),
                         grad_scale=float(out["eager"][1].abs().max())))
    # direct call: all pixels ignored (zero weights) -> zero statistics, zero gradient
    z = torch.randn(1, 3, 4, 4, requires_grad=True)
    tgt = torch.zeros(1, 4, 4, dtype=torch.int64)
    w = torch.zeros(1, 4, 4)
    from autoloss_ray.parameterizations import IDENTITY_TABLE
    I, O, npred = _triton.RegionStats.apply(z, tgt, w, IDENTITY_TABLE, IDENTITY_TABLE)
    (I.sum() + O.sum()).backward()
    rows.append(dict(empty=[float(I.abs().sum()), float(O.abs().sum()), float(npred.sum()),
                            float(z.grad.abs().sum())]))
    print("ROWS" + json.dumps(rows))
""")


@pytest.mark.slow
def test_triton_region_kernels_match_the_eager_path_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ROWS"))
    rows = json.loads(line[4:])
    *cases, empty = rows
    assert len(cases) == 9
    for r in cases:
        tol = 1e-5 if r["dtype"] == "torch.float32" else 1e-4
        assert abs(r["eager"] - r["triton"]) <= tol * max(1.0, abs(r["eager"])), r
        gtol = 1e-5 if r["dtype"] == "torch.float32" else 2e-2
        assert r["grad_err"] <= gtol * max(r["grad_scale"], 1e-3), r
        assert r["grad_scale"] > 0, r  # a zero gradient would compare equal trivially
    assert empty["empty"] == [0.0, 0.0, 0.0, 0.0]


def test_triton_path_is_for_cuda_float32_only():
    from autoloss_ray.losses import _triton

    z = torch.zeros(1, 2, 3, 3)
    assert not _triton.usable(z, torch.float32)  # CPU tensors keep the native/eager path
    if torch.cuda.is_available():
        zc = z.cuda()
        assert _triton.usable(zc, torch.float32) == _triton.HAVE_TRITON
        assert not _triton.usable(zc, torch.float64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["miou", "fwiou", "biou", "macc", "gacc", "bf1", "miou+biou"])
def test_cuda_surrogates_match_cpu(metric):
    import numpy as np

    from autoloss_ray.losses import SurrogateLoss, search_space

    space = search_space(metric, "bezier")
    theta = np.random.default_rng(0).uniform(0.1, 0.9, space.dim)
    loss = SurrogateLoss(metric, num_classes=6, ignore_index=255, theta=theta)
    g = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(3, 6, 40, 56, generator=g)
    t = torch.randint(0, 6, (3, 40, 56), generator=g)
    t[:, :4] = 255
    zc, zg = z.clone().requires_grad_(True), z.cuda().requires_grad_(True)
    vc, vg = loss(zc, t), loss(zg, t.cuda())
    vc.backward()
    vg.backward()
    assert vg.dtype == torch.float32
    torch.testing.assert_close(vg.cpu(), vc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zg.grad.cpu(), zc.grad, atol=1e-6, rtol=1e-3)
    # bf16 logits under autocast: float32 sums, close to float32 on the same logits
    zb = z.cuda().bfloat16().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        vb = loss(zb, t.cuda())
    vb.backward()
    assert vb.dtype == torch.float32 and zb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(vb.cpu(), loss(z.bfloat16().float(), t), atol=1e-4, rtol=1e-4)
