"""The CUDA path's Triton kernels (autoloss_ray.losses._triton), run on CPU by Triton's interpreter
(``TRITON_INTERPRET=1``, set in a subprocess before Triton is imported) and compared with the
eager PyTorch path: values and gradients of every region surrogate and of BF1, every
parameterization, random admissible curves, float32 and bf16 logits, ignored pixels, empty
classes and erosion ties."""

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
    from autoloss_ray.losses.parameterizations import PARAMETERIZATIONS
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
    from autoloss_ray.losses.parameterizations import IDENTITY_TABLE
    I, O, npred = _triton.RegionStats.apply(z, tgt, w, IDENTITY_TABLE, IDENTITY_TABLE)
    (I.sum() + O.sum()).backward()
    rows.append(dict(empty=[float(I.abs().sum()), float(O.abs().sum()), float(npred.sum()),
                            float(z.grad.abs().sum())]))
    print("ROWS" + json.dumps(rows))
""")


def _run_in_interpreter(script: str) -> list[dict]:
    """The rows a script prints after "ROWS", run with TRITON_INTERPRET=1 in a subprocess."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ROWS"))
    return json.loads(line[4:])


def _assert_matches_eager(cases: list[dict]) -> None:
    """Loss and gradient of the Triton path equal the eager path's (bf16: to its rounding)."""
    for r in cases:
        tol = 1e-5 if r["dtype"] == "torch.float32" else 1e-4
        assert abs(r["eager"] - r["triton"]) <= tol * max(1.0, abs(r["eager"])), r
        gtol = 1e-5 if r["dtype"] == "torch.float32" else 2e-2
        assert r["grad_err"] <= gtol * max(r["grad_scale"], 1e-3), r
        assert r["grad_scale"] > 0, r  # a zero gradient would compare equal trivially


@pytest.mark.slow
def test_triton_region_kernels_match_the_eager_path_in_the_interpreter():
    *cases, empty = _run_in_interpreter(SCRIPT)
    assert len(cases) == 9
    _assert_matches_eager(cases)
    assert empty["empty"] == [0.0, 0.0, 0.0, 0.0]


BF1_SCRIPT = textwrap.dedent(r"""
    import json, os
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import numpy as np
    import torch
    from autoloss_ray.losses import _triton, _triton_bf1
    from autoloss_ray.losses import surrogate as surrogates
    from autoloss_ray.losses import SurrogateLoss, search_space
    from autoloss_ray.losses._eager import _SoftBoundary
    from autoloss_ray.losses.parameterizations import IDENTITY_TABLE, PARAMETERIZATIONS

    surrogates._use_native = lambda z: False  # the reference: the eager torch path
    usable = _triton.usable
    _triton_bf1.BLOCK = 32  # 7 x 13 = 91 pixels: three programs, rows split across them
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    N, C, H, W = 2, 4, 7, 13
    rows = []
    pars = list(PARAMETERIZATIONS)
    cases = [("bf1", pars[i % len(pars)], r) for i, r in enumerate((2, 1, 0, 3))]
    cases += [("miou+bf1", "bezier", 1)]
    for k, (metric, par, r) in enumerate(cases):
        space = search_space(metric, par)
        theta = rng.uniform(np.maximum(space.low, -3), np.minimum(space.high, 3))
        loss = SurrogateLoss(metric, num_classes=C, ignore_index=255, parameterization=par,
                             theta=theta, boundary_tolerance=r)
        dtype = torch.bfloat16 if k % 2 else torch.float32
        z = (3 * torch.randn(N, C, H, W, generator=g)).to(dtype)
        z[0, :, 2:5, 3:8] = 0.5  # equal probabilities: erosion ties inside and at the edge
        z[1, :, :, :2] = -1.0    # ties touching the image border
        t = torch.randint(0, C - 1, (N, H, W), generator=g)  # class C-1 absent
        t[0, :2] = 255
        out = {}
        for name, flag in (("eager", False), ("triton", True)):
            _triton.usable = (lambda z, cd: True) if flag else (lambda z, cd: False)
            zz = z.clone().requires_grad_(True)
            v = loss(zz, t)
            v.backward()
            out[name] = (v.item(), zz.grad.float())
        _triton.usable = usable
        rows.append(dict(metric=metric, par=par, r=r, dtype=str(dtype), eager=out["eager"][0],
                         triton=out["triton"][0],
                         grad_err=float((out["eager"][1] - out["triton"][1]).abs().max()),
                         grad_scale=float(out["eager"][1].abs().max())))
    # direct call, identity curves, the counts alone (no gradient through b), against
    # the eager soft boundary and its sums
    z = 2 * torch.randn(1, 3, 6, 9, generator=g)
    v = (torch.rand(1, 6, 9, generator=g) > 0.2).float()
    dbg = torch.rand(1, 3, 6, 9, generator=g) > 0.5
    tables = [IDENTITY_TABLE] * 4
    za = z.clone().requires_grad_(True)
    b, n_p, m_p, pred = _triton_bf1.BF1Counts.apply(za, v, dbg.view(torch.uint8), *tables)
    (n_p * torch.arange(1.0, 4.0) + 2 * m_p).sum().backward()
    ze = z.clone().requires_grad_(True)
    be = _SoftBoundary.apply(ze, torch.float32, *tables)
    bv = be * v.unsqueeze(1)
    n_pe, m_pe = bv.sum((0, 2, 3)), (bv * dbg.float()).sum((0, 2, 3))
    (n_pe * torch.arange(1.0, 4.0) + 2 * m_pe).sum().backward()
    rows.append(dict(direct=[float((b - be).abs().max()), float((n_p - n_pe).abs().max()),
                             float((m_p - m_pe).abs().max()),
                             float((za.grad - ze.grad).abs().max()),
                             float(ze.grad.abs().max()),
                             bool(torch.equal(pred, z.argmax(1)))]))
    print("ROWS" + json.dumps(rows))
""")


@pytest.mark.slow
def test_triton_bf1_kernels_match_the_eager_path_in_the_interpreter():
    *cases, direct = _run_in_interpreter(BF1_SCRIPT)
    assert len(cases) == 5
    _assert_matches_eager(cases)
    b_err, np_err, mp_err, grad_err, grad_scale, pred_ok = direct["direct"]
    assert b_err <= 1e-6 and np_err <= 1e-5 and mp_err <= 1e-5, direct
    assert grad_scale > 0 and grad_err <= 1e-5 * grad_scale, direct
    assert pred_ok, direct


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


# -- compiled for the GPU, on this machine ------------------------------------------------------
# The interpreter runs a kernel's Python, not Triton's compiler: a kernel it accepts can still
# fail to compile (a loop-carried value changing type, an op the compiler lacks, too much
# shared memory). Triton compiles ahead of time without a GPU, down to the cubin that ptxas
# makes, for a target named by hand. The launches are recorded from real losses (so each
# argument's dtype is the one the loss passes) and every distinct one is compiled for sm_90.

_PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16",
        torch.int64: "*i64", torch.int32: "*i32", torch.int8: "*i8", torch.uint8: "*u8"}


class _LaunchRecorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **constexprs)`` records
    the argument types and constexpr values instead of launching."""

    def __init__(self, kernel, specs: dict):
        self.kernel, self.specs = kernel, specs

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            names = self.kernel.arg_names
            signature, constexprs = {}, {}
            for p, name in zip(self.kernel.params, names):
                value = kwargs[name] if name in kwargs else args[names.index(name)]
                if p.is_constexpr:
                    signature[name] = "constexpr"
                    constexprs[name] = value
                elif isinstance(value, torch.Tensor):
                    signature[name] = _PTR[value.dtype]
                elif isinstance(value, bool):
                    signature[name] = "i1"
                elif isinstance(value, int):
                    signature[name] = "i32" if abs(value) < 2**31 else "i64"
                else:
                    signature[name] = "fp32"
            key = (self.kernel.__name__, tuple(signature.items()),
                   tuple(sorted(constexprs.items())))
            self.specs.setdefault(key, (self.kernel, signature, constexprs))
        return launch


def _record_launches(monkeypatch) -> dict:
    """Every Triton kernel of the losses replaced by a :class:`_LaunchRecorder` and the Triton
    path forced on (CPU tensors included); returns the dict the launches land in."""
    from autoloss_ray.losses import _triton, _triton_bf1

    specs: dict = {}
    for module, names in ((_triton, ("_region_fwd", "_region_bwd")),
                          (_triton_bf1, ("_stats", "_fwd", "_bwd_p", "_bwd_z"))):
        for name in names:
            monkeypatch.setattr(module, name, _LaunchRecorder(getattr(module, name), specs))
    monkeypatch.setattr(_triton, "usable", lambda z, cd: True)
    return specs


def test_triton_kernels_compile_to_cubin_for_sm90(monkeypatch):
    """Every launch of the CUDA path (region surrogates and BF1, float32 and bf16 logits,
    identity and searched curves, with and without the OR term, both backward variants)
    compiles with Triton's own compiler and ptxas for sm_90 (the H100/H200), here without a
    GPU, within the shared memory an sm_90 block can have."""
    import numpy as np
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from autoloss_ray.losses import SurrogateLoss, _triton, search_space
    from autoloss_ray.losses import surrogate as surrogates

    if not _triton.HAVE_TRITON:
        pytest.skip("Triton imports but its kernels were not defined")
    specs = _record_launches(monkeypatch)
    monkeypatch.setattr(surrogates, "_use_native", lambda z: False)  # CPU tensors, CUDA path
    rng = np.random.default_rng(0)
    cases = [("miou", "bezier", torch.bfloat16, True), ("macc", "bezier", torch.float32, False),
             ("gacc", "linear", torch.float32, True), ("bf1", "bezier", torch.bfloat16, True),
             ("bf1", "bezier", torch.float32, False), ("miou+bf1", "linear", torch.float32, True)]
    for metric, par, dtype, searched in cases:
        space = search_space(metric, par)
        theta = rng.uniform(np.maximum(space.low, -3), np.minimum(space.high, 3)) \
            if searched else None
        loss = SurrogateLoss(metric, num_classes=5, parameterization=par, theta=theta,
                             boundary_tolerance=1)
        z = torch.randn(2, 5, 12, 16).to(dtype).requires_grad_(True)
        loss(z, torch.randint(0, 5, (2, 12, 16))).backward()  # outputs are unwritten: no values
    kernels = {key[0] for key in specs}
    assert kernels == {"_region_fwd", "_region_bwd", "_stats", "_fwd", "_bwd_p", "_bwd_z"}
    assert {s[2]["USE_OR"] for s in specs.values() if s[0].__name__ == "_region_fwd"} \
        == {True, False}
    assert {s[1]["z_ptr"] for s in specs.values() if s[0].__name__ == "_fwd"} \
        == {"*fp32", "*bf16"}
    target = GPUTarget("cuda", 90, 32)
    for kernel, signature, constexprs in specs.values():
        compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                                  target=target)
        assert len(compiled.asm["cubin"]) > 0, (kernel.__name__, signature)
        assert compiled.metadata.shared <= 227 * 1024, (kernel.__name__, compiled.metadata.shared)
    print(f"{len(specs)} launches compiled for sm_90")


@pytest.mark.parametrize("path", ["triton", "eager"])
def test_the_cuda_loss_path_waits_for_the_device_only_at_bf1_boundary_sites(monkeypatch, path):
    """The loss as a GPU runs it (the Triton path, or the eager one without Triton), with the
    labels checked where they were loaded (``check_labels=False``, as the proxy trial builds
    it): no operation that makes the host wait for the device (HostReads), forward and
    backward, except BF1's count of its target-boundary sites (one per BF1 term). Empty
    class sets and ignored pixels included. On the Triton path the kernels' launches are
    recorded, not run: the Python around them is what is checked."""
    import numpy as np

    from autoloss_ray.host_reads import HostReads
    from autoloss_ray.losses import SurrogateLoss, search_space
    from autoloss_ray.losses import surrogate as surrogates

    # as on a GPU: neither the CPU kernels nor their CPU label pass (a CUDA tensor is not
    # _native_capable); the tensors here are CPU ones, so both are turned off
    monkeypatch.setattr(surrogates, "_use_native", lambda z: False)
    monkeypatch.setattr(surrogates, "_native_capable", lambda z: False)
    if path == "triton":
        specs = _record_launches(monkeypatch)
    rng = np.random.default_rng(1)
    for metric in ("miou", "fwiou", "biou", "macc", "gacc", "bf1", "miou+bf1"):
        space = search_space(metric, "bezier")
        theta = rng.uniform(np.maximum(space.low, -3), np.minimum(space.high, 3))
        loss = SurrogateLoss(metric, num_classes=5, theta=theta, check_labels=False)
        z = torch.randn(2, 5, 12, 16, requires_grad=True)
        t = torch.randint(0, 4, (2, 12, 16))  # class 4 absent
        t[0, :3] = 255
        with HostReads() as reads:
            loss(z, t).backward()
        assert reads.by_function() == ({"_window_max_at": metric.count("bf1")}
                                       if "bf1" in metric else {}), (metric, reads.sites)
    if path == "triton":
        assert len(specs) > 0
