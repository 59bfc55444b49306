"""The fused CPU kernels (autoloss_ray.native) against the eager PyTorch path.

Every surrogate has two CPU implementations: the eager one (torch ops, blocked autograd
functions) and the native one (one C++ pass per direction). The eager path is itself tested
against plain autograd and the exact metrics in test_surrogates.py (which runs each of its
tests on both paths); here the two are compared with each other on inputs built to hit the
kernels' edges: ignored pixels, exact ties, tiny and odd image sizes, every curve shape,
uneven thread ranges, float64. Also: the switch, the fallback when no compiler works, and
concurrent first builds.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch

from autoloss_ray import native
from autoloss_ray.losses import SurrogateLoss, search_space
from autoloss_ray.losses import surrogate as S
from autoloss_ray.losses._boundary import _argmax1
from autoloss_ray.losses._eager import _RegionStats
from autoloss_ray.losses._native import _label_sites, _RegionStatsNative
from autoloss_ray.losses._term_scores import bf1_counts_native
from autoloss_ray.losses.parameterizations import curve_table
from autoloss_ray.metrics import METRICS
from tests import REPO

HAS_CXX = any(shutil.which(c) for c in (os.environ.get("CXX") or "c++", "g++", "clang++"))
pytestmark = pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler on this machine")


def _both(loss, z, target, monkeypatch):
    """(value, grad) on the native path and on the eager path."""
    out = []
    for flag in ("1", "0"):
        monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", flag)
        x = z.detach().clone().requires_grad_(True)
        val = loss(x, target)
        (g,) = torch.autograd.grad(val, x)
        out.append((val.detach(), g))
    return out


def _random_theta(space, rng):
    th = rng.uniform(np.maximum(space.low, -3), np.minimum(space.high, 3))
    faces = (rng.random(space.dim) < 0.2) & np.isfinite(space.low)
    th[faces] = np.where(rng.random(faces.sum()) < 0.5, space.low[faces], space.high[faces])
    return th


def _inputs(seed, n, c, h, w, dtype, ties=False):
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(n, c, h, w, generator=g, dtype=dtype)
    if ties:  # coarse logits: many exactly equal probabilities, tied argmax, tied minima
        z = torch.round(z / 2) * 2
    t = torch.randint(0, c, (n, (h + 2) // 3, (w + 2) // 3), generator=g)
    t = t.repeat_interleave(3, 1).repeat_interleave(3, 2)[:, :h, :w].contiguous()
    t[:, : max(1, h // 5), : max(1, w // 4)] = 255
    return z, t


def test_kernels_build_on_this_machine():
    assert native.available(), native.unavailable_reason()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parameterization", ["bezier", "bezier1", "linear", "identity"])
@pytest.mark.parametrize("metric", list(METRICS))
def test_native_equals_eager(metric, parameterization, dtype, monkeypatch):
    rng = np.random.default_rng(zlib.crc32(f"{metric}/{parameterization}".encode()))
    space = search_space(metric, parameterization)
    loss = SurrogateLoss(metric, num_classes=6, parameterization=parameterization,
                         theta=_random_theta(space, rng), boundary_tolerance=2)
    for seed, (n, h, w), ties in ((0, (2, 19, 23), False), (1, (1, 7, 5), True),
                                  (2, (3, 1, 9), False), (3, (1, 4, 1), True)):
        z, t = _inputs(seed, n, 6, h, w, dtype, ties)
        (v1, g1), (v2, g2) = _both(loss, z, t, monkeypatch)
        tol = dict(atol=1e-12, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-6,
                                                                               rtol=1e-4)
        torch.testing.assert_close(v1, v2, **tol)
        torch.testing.assert_close(g1, g2, **tol)
        assert g1.dtype == dtype


def test_native_uneven_thread_ranges(monkeypatch):
    """Ranges that cut images and tiles anywhere give the same sums and gradients."""
    z, t = _inputs(5, 3, 5, 21, 17, torch.float64)
    space = search_space("miou+bf1")
    loss = SurrogateLoss("miou+bf1", num_classes=5, boundary_tolerance=3,
                         theta=_random_theta(space, np.random.default_rng(5)))
    ref = _both(loss, z, t, monkeypatch)[0]
    orig = native.parallel_ranges

    def odd(total, *, threads=None, align=128):
        cuts = sorted({0, total, *(int(x) for x in np.linspace(0, total, 6)[1:-1] + 1)})
        return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a] if total > 2 else \
            orig(total, threads=threads, align=align)

    monkeypatch.setattr(native, "parallel_ranges", odd)
    assert len(odd(3 * 21 * 17)) > 3
    got = _both(loss, z, t, monkeypatch)[0]
    torch.testing.assert_close(got[0], ref[0], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got[1], ref[1], atol=1e-12, rtol=1e-10)


def test_parallel_ranges_cover_once():
    for total in (1, 5, 127, 128, 129, 10_000):
        for threads in (1, 2, 3, 8):
            r = native.parallel_ranges(total, threads=threads, align=16)
            assert r[0][0] == 0 and r[-1][1] == total
            assert all(a < b for a, b in r) and all(r[i][1] == r[i + 1][0]
                                                     for i in range(len(r) - 1))
            assert all(a % 16 == 0 for a, _ in r) and len(r) <= threads


def test_one_class_has_zero_gradient(monkeypatch):
    z, _ = _inputs(12, 2, 1, 8, 9, torch.float64)
    t = torch.zeros(2, 8, 9, dtype=torch.long)
    for metric in METRICS:
        (v1, g1), (v2, g2) = _both(SurrogateLoss(metric, num_classes=1), z, t, monkeypatch)
        assert v1.item() == v2.item()
        assert g1.abs().max() < 1e-12 and g2.abs().max() == 0


def test_native_generic_curve_shape_equals_eager():
    """A curve with 3 Bezier segments (5 bounds: the kernels' generic evaluator)."""
    g = torch.Generator().manual_seed(0)
    xs = torch.tensor([0, .1, .3, .45, .5, .8, 1], dtype=torch.float64)
    ys = torch.tensor([0, .3, .35, .5, .9, .92, 1], dtype=torch.float64)
    table = curve_table(xs, ys)
    assert table.bounds.numel() == 5
    z = torch.randn(2, 4, 9, 11, generator=g, dtype=torch.float64)
    tgt = torch.randint(0, 4, (2, 9, 11), generator=g)
    w = (torch.rand(2, 9, 11, generator=g) > 0.2).double()
    outs = []
    for fn in (_RegionStatsNative, _RegionStats):
        x = z.clone().requires_grad_(True)
        I, O, npred = fn.apply(x, tgt, w, table, table)[:3]
        (gr,) = torch.autograd.grad((I * torch.arange(1., 5.)).sum() + (O ** 2).sum(), x)
        outs.append((I.detach(), O.detach(), npred, gr))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    # the native pass also sums the target pixels per class (the eager path's index_add)
    n = _RegionStatsNative.apply(z, tgt, w, table, table)[3]
    assert torch.equal(n, torch.zeros(4, dtype=w.dtype).index_add_(0, tgt.view(-1), w.view(-1)))


def test_native_bf1_counts_predicted_boundaries_as_label_sites():
    """The BF1 kernel's count of predicted boundary pixels per class equals the label-site
    kernel's on argmax(z), ignored pixels and ties included."""
    for seed, (n, c, h, w) in enumerate(((2, 4, 9, 11), (1, 3, 1, 7), (3, 5, 6, 1))):
        z, t = _inputs(seed, n, c, h, w, torch.float32, ties=True)
        loss = SurrogateLoss.from_preset("bf1", num_classes=c)
        valid = t != 255
        counts = bf1_counts_native(loss, z, t, valid, loss._tables_on(z.device, z.dtype),
                                   torch.float32)
        site = _label_sites(_argmax1(z), valid)
        expect = torch.bincount(site[site >= 0].long(), minlength=c)
        assert torch.equal(counts[4].long(), expect)


def test_native_large_tolerance_and_tiny_images(monkeypatch):
    """Tolerance windows larger than the image, 1-pixel rows and columns."""
    for (h, w), r in (((5, 6), 40), ((1, 8), 3), ((8, 1), 0), ((2, 2), 1)):
        z, t = _inputs(7, 2, 4, h, w, torch.float64, ties=True)
        loss = SurrogateLoss.from_preset("bf1", num_classes=4, boundary_tolerance=r)
        (v1, g1), (v2, g2) = _both(loss, z, t, monkeypatch)
        torch.testing.assert_close(v1, v2, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(g1, g2, atol=1e-12, rtol=1e-10)


def test_images_of_2_to_the_31_pixels_take_the_eager_path():
    huge = torch.zeros(1, 1, 1, 1).expand(1, 2, 2**16, 2**15)  # no memory behind it
    assert not S._use_native(huge)
    assert S._use_native(torch.zeros(1, 2, 2**8, 2**7))


def test_switch_off_uses_the_eager_path(monkeypatch):
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "0")
    assert not native.enabled() and native.library() is None
    assert not S._use_native(torch.zeros(1))
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1")
    assert S._use_native(torch.zeros(1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("metric", list(METRICS))
def test_non_finite_logits_give_what_the_eager_path_gives(metric, bad, monkeypatch):
    """A diverged network's NaN/+inf logits must show in the loss (trials fail on a non-finite
    loss), exactly as on the eager path: such inputs are routed there (-inf too: the kernels'
    -ffast-math promises nothing for infinities)."""
    z, t = _inputs(11, 2, 4, 9, 10, torch.float32)
    z[1, 2, 4, 5] = bad
    loss = SurrogateLoss.from_preset(metric, num_classes=4, boundary_tolerance=2)
    (v1, g1), (v2, g2) = _both(loss, z, t, monkeypatch)
    torch.testing.assert_close(v1, v2, equal_nan=True)
    torch.testing.assert_close(g1, g2, equal_nan=True)
    if bad != -float("inf"):  # a -inf logit is a legal zero probability
        assert not torch.isfinite(v1) or not torch.isfinite(g1).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_raise_gives_a_clear_error(bad):
    """nonfinite="raise": NaN/+inf logits are refused in score with a sentence; the default
    ("propagate", the case above) keeps giving a non-finite loss; -inf stays legal."""
    z, t = _inputs(12, 2, 3, 6, 7, torch.float32)
    strict = SurrogateLoss.from_preset("miou", num_classes=3, nonfinite="raise")
    finite = strict(z, t)
    assert torch.isfinite(finite)
    z[0, 1, 2, 3] = bad
    z[1, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"logits hold 2 NaN or \+inf value\(s\) of 252"):
        strict.score(z, t)
    assert not torch.isfinite(SurrogateLoss.from_preset("miou", num_classes=3)(z, t))
    z[0, 1, 2, 3] = z[1, 0, 0, 0] = -float("inf")
    assert torch.isfinite(strict(z, t))
    with pytest.raises(ValueError, match="nonfinite must be 'propagate' or 'raise'"):
        SurrogateLoss("miou", num_classes=3, nonfinite="ignore")


_CHILD = textwrap.dedent("""
    import warnings, torch
    warnings.simplefilter("always")
    from autoloss_ray import SurrogateLoss, native
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 12, 10, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (2, 12, 10), generator=g)
    v = SurrogateLoss("miou+bf1", num_classes=5)(z, t)
    print("AVAILABLE", native.available())
    print("VALUE", repr(v.item()))
""")


def _child(env_extra, cache):
    env = dict(os.environ, AUTOLOSS_RAY_CACHE=str(cache), **env_extra)
    return subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                          text=True, timeout=300)


def _value(out):
    return float(next(line for line in out.splitlines() if line.startswith("VALUE")).split()[1])


@pytest.mark.slow  # fresh kernel builds in child processes (~10-60 s each)
def test_failed_build_warns_and_falls_back(tmp_path):
    bad = _child({"CXX": "false"}, tmp_path / "bad")
    assert bad.returncode == 0, bad.stderr
    assert "AVAILABLE False" in bad.stdout
    assert "fused CPU kernels unavailable" in bad.stderr and "false failed" in bad.stderr
    assert not list((tmp_path / "bad").glob("*.so"))  # nothing half-written left behind
    eager = _child({"AUTOLOSS_RAY_NATIVE": "0"}, tmp_path / "off")
    assert eager.returncode == 0 and "AVAILABLE False" in eager.stdout
    assert "unavailable" not in eager.stderr  # switched off: no warning
    assert _value(bad.stdout) == _value(eager.stdout)


@pytest.mark.slow  # fresh kernel builds in child processes (~10-60 s each)
def test_concurrent_first_builds_share_one_library(tmp_path):
    """Ray workers starting together on a fresh machine build at the same time."""
    env = dict(os.environ, AUTOLOSS_RAY_CACHE=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert all("AVAILABLE True" in o[0] for o in outs)
    assert len({_value(o[0]) for o in outs}) == 1
    assert len(list(tmp_path.glob("kernels-*.so"))) == 1
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("kernels-")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_logits_give_equal_gradients_at_any_position(dtype, monkeypatch):
    """The same logits and label at every pixel: every pixel, whatever its place in a tile
    (vector body or tail), must get bit-identical probabilities and so the same gradient;
    otherwise exact ties in flat regions break by position. (libm's exp, an estimated 1/x, and
    a class sum reordered in a remainder loop each broke this before.)"""
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1")
    rng = np.random.default_rng(0)
    for C in range(1, 9):
        for shape in ((1, 31), (5, 25), (3, 50), (2, 129)):
            base = torch.tensor(rng.normal(0, 2, C), dtype=dtype)
            z = base.view(1, C, 1, 1).expand(1, C, *shape).contiguous()
            t = torch.zeros(1, *shape, dtype=torch.long)
            for metric in ("miou", "macc"):
                loss = SurrogateLoss(metric, num_classes=C, parameterization="identity")
                x = z.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(loss(x, t), x)
                flat = g.reshape(C, -1)
                assert torch.equal(flat, flat[:, :1].expand_as(flat)), (C, shape, metric)


def test_exp_accuracy_and_position_independence():
    """The kernels' exp (plain IEEE operations) against numpy's long-double exp: within 2 ulp
    (float32 on [-87, 0], float64 on [-708, 0]), exp(0) = 1, and one value computed alone (a
    scalar tail) bit-equal to the same value inside a long vectorized run."""
    lib = native.library()
    g = torch.Generator().manual_seed(0)
    for dtype, code, lo in ((torch.float32, 0, -87.0), (torch.float64, 1, -708.0)):
        x = torch.cat([torch.linspace(lo, 0, 200_001, dtype=dtype),
                       -4 * torch.rand(100_000, generator=g, dtype=dtype),
                       torch.tensor([0.0, -0.0], dtype=dtype)])
        out = torch.empty_like(x)
        assert lib.autoloss_exp(code, x.data_ptr(), out.data_ptr(), x.numel()) == 0
        ref = np.exp(x.numpy().astype(np.longdouble))
        o = out.numpy()
        ulp = np.spacing(ref.astype(o.dtype)).astype(np.longdouble)
        assert float((np.abs(o.astype(np.longdouble) - ref) / ulp).max()) <= 2.0
        assert o[-1] == 1.0 and o[-2] == 1.0
        one = torch.empty(1, dtype=dtype)
        for i in torch.randint(0, x.numel(), (50,), generator=g).tolist():
            xi = x[i:i + 1].clone()
            lib.autoloss_exp(code, xi.data_ptr(), one.data_ptr(), 1)
            assert one.item() == out[i].item()


def test_saturated_probability_is_exactly_one(monkeypatch):
    """p = 1 must be exactly 1 (h(1) = 1): a curve with a bound at x = 1 (theta on its box's
    face) then selects the same segment as on the eager path, at every position."""
    sp = search_space("gacc", "bezier")
    theta = sp.init.copy()
    theta[2] = 1.0
    loss = SurrogateLoss("gacc", num_classes=2, theta=theta)
    z = torch.zeros(1, 2, 1, 24)
    z[:, 0] = 30.0
    t = torch.zeros(1, 1, 24, dtype=torch.long)
    (v1, _), (v2, _) = _both(loss, z, t, monkeypatch)
    assert v1.item() == v2.item() == 0.0


def test_predicted_classes_are_the_first_argmax_on_both_paths(monkeypatch):
    """Class sets use argmax(logits): logits 1e-9 apart tie in float32 probabilities but not
    in argmax, so class 1 (never the argmax, absent from the target) is not in the mean."""
    loss = SurrogateLoss("miou", num_classes=2)
    z = torch.zeros(1, 2, 4, 4)
    z[:, 1] = -1e-9
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    (v1, _), (v2, _) = _both(loss, z, t, monkeypatch)
    assert v1.item() == pytest.approx(v2.item(), abs=1e-7)
    assert v1.item() == pytest.approx(0.5, abs=1e-6)  # one class, soft IoU 1/2


def test_switch_flipped_between_forward_and_backward(monkeypatch):
    z, t = _inputs(13, 2, 4, 9, 10, torch.float64)
    for metric in ("miou", "bf1"):
        loss = SurrogateLoss.from_preset(metric, num_classes=4, boundary_tolerance=2)
        monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1")
        x = z.clone().requires_grad_(True)
        val = loss(x, t)
        monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "0")
        (g,) = torch.autograd.grad(val, x)
        (g_ref,) = torch.autograd.grad(loss(x, t), x)
        torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-9)


_FTZ_CHILD = textwrap.dedent("""
    import json, numpy as np, torch
    from autoloss_ray import native
    before = (float(np.float32(1e-39) * np.float32(1)), float(torch.tensor([1e-39]) * 1))
    assert native.library() is not None, native.unavailable_reason()
    after = (float(np.float32(1e-39) * np.float32(1)), float(torch.tensor([1e-39]) * 1))
    print("SUBNORMALS", json.dumps([before, after]))
""")


def test_loading_the_kernels_keeps_subnormals(tmp_path):
    """-ffast-math at link time would add crtfastmath.o, which sets flush-to-zero for the whole
    process (user code, numpy, the eager path). The library is linked without it."""
    env = dict(os.environ, AUTOLOSS_RAY_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _FTZ_CHILD], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("SUBNORMALS"))
    before, after = json.loads(line.split(" ", 1)[1])
    assert before == after and all(v > 0 for v in after)


def test_cache_directory_must_be_private(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not native._private_dir(shared)
    own = tmp_path / "own"
    assert native._private_dir(own) and (own.stat().st_mode & 0o777) == 0o700
    monkeypatch.setenv("AUTOLOSS_RAY_CACHE", str(shared))
    with pytest.warns(RuntimeWarning, match="kernel cache .*shared.*using a private temporary"):
        assert native._cache_dir() != shared  # the per-user temporary directory instead
    group = tmp_path / "group"  # a group member could swap the library: refused too
    group.mkdir()
    group.chmod(0o775)
    assert not native._private_dir(group)
    group.chmod(0o755)
    assert native._private_dir(group)


def test_a_cache_or_library_of_another_user_is_not_trusted(tmp_path, monkeypatch):
    """The owner check itself: a private-looking directory and a read-only library that
    belong to another user (here: this process pretends to be uid + 1) are refused."""
    own = tmp_path / "own"
    assert native._private_dir(own)
    so = own / "kernels-x.so"
    so.write_bytes(b"\x7fELF")
    so.chmod(0o644)
    assert native._trusted_file(so)
    monkeypatch.setattr(native.os, "getuid", lambda: os.stat(own).st_uid + 1)
    assert not native._private_dir(own)
    assert not native._trusted_file(so)


@pytest.mark.slow  # fresh kernel builds in child processes (~10-60 s each)
def test_untrusted_cache_falls_back_to_a_fresh_private_build(tmp_path, monkeypatch):
    """Neither a group-writable cache nor a library file others can write is used: the
    kernels are built (and loaded) from a fresh private directory instead, with a warning."""
    monkeypatch.setattr(native, "_private_dir", lambda p: p == tmp_path / "cache"
                        and (p.mkdir(mode=0o700, exist_ok=True) or True))
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTOLOSS_RAY_CACHE", str(cache))
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(native, "_fresh_private_dir",
                        lambda: (fresh.mkdir(mode=0o700), fresh)[1])
    lib = native._build()  # builds kernels-<key>.so in the (trusted) cache
    so = next(cache.glob("kernels-*.so"))
    assert native._trusted_file(so) and lib.autoloss_abi_version() == native.ABI_VERSION
    before = so.read_bytes()
    so.chmod(0o666)  # anyone could have replaced it: never loaded
    assert not native._trusted_file(so)
    with pytest.warns(RuntimeWarning, match="not a file of yours.*building in"):
        lib2 = native._build()
    assert (fresh / so.name).is_file() and native._trusted_file(fresh / so.name)
    assert lib2.autoloss_abi_version() == native.ABI_VERSION
    assert so.read_bytes() == before  # the untrusted file is left alone, not overwritten
    assert not native._trusted_file(tmp_path / "missing.so")


@pytest.mark.slow  # fresh kernel builds in child processes (~10-60 s each)
def test_untrusted_cache_dir_is_refused_in_a_child(tmp_path):
    """End to end: a group-writable AUTOLOSS_RAY_CACHE gets nothing written into it."""
    cache = tmp_path / "groupw"
    cache.mkdir()
    cache.chmod(0o775)
    out = _child({}, cache)
    assert out.returncode == 0, out.stderr
    assert "AVAILABLE True" in out.stdout and "not a directory of yours" in out.stderr
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("ignore", [255, 2, None, -100])
def test_target_prep_equals_the_torch_weights_and_band(ignore):
    """The native target pass (region kernels' target, weights, BIoU's band, bad-label count)
    against the torch ops it replaces: where(valid, target, 0), valid, valid & the metrics'
    checked_boundary_band; every radius including 0 and windows larger than the image,
    1-pixel rows and columns, both backgrounds."""
    from autoloss_ray.metrics.counts import checked_boundary_band

    g = torch.Generator().manual_seed(3)
    for (n, h, w) in ((3, 17, 13), (2, 1, 9), (2, 7, 1), (1, 2, 2)):
        t = torch.randint(0, 4, (n, h, w), generator=g)
        if ignore is not None:
            t[torch.rand(t.shape, generator=g) < 0.2] = ignore
        valid = torch.ones_like(t, dtype=torch.bool) if ignore is None else t != ignore
        for cd in (torch.float32, torch.float64):
            for r in (0, 1, 3, 40):
                for bg in (None, 0):
                    tgt, wt, wb, bad = S._target_prep(t, 4, ignore, cd, band_radius=r,
                                                      background=bg)
                    band = checked_boundary_band(t, 4, ignore_index=ignore, tolerance=r,
                                                 background=bg)
                    assert bad == 0 and wt.dtype == cd
                    assert torch.equal(tgt, torch.where(valid, t, 0))
                    assert torch.equal(wt, valid.to(cd))
                    assert torch.equal(wb, (valid & band).to(cd))
            assert S._target_prep(t, 4, ignore, cd)[2] is None
    t = torch.zeros(2, 5, 5, dtype=torch.long)
    t[1, 2, 3], t[0, 0, 0] = 7, -3
    tgt, wt, _, bad = S._target_prep(t, 4, 255, torch.float32)
    assert bad == 2 and wt[1, 2, 3] == 0 and tgt[1, 2, 3] == 0  # no index outside [0, C)


@pytest.mark.parametrize("metric", ["miou", "biou", "bf1"])
def test_native_label_check_raises_the_same_error(metric):
    loss = SurrogateLoss.from_preset(metric, num_classes=3)
    t = torch.zeros(2, 5, 5, dtype=torch.long)
    t[1, 2, 3] = 7
    with pytest.raises(ValueError, match=r"outside 0..2, i.e. outside \[0, 3\), that are not "
                                         r"ignore_index=255: \[7\]"):
        loss(torch.randn(2, 3, 5, 5), t)
    loss = SurrogateLoss.from_preset(metric, num_classes=3, check_labels=False)
    assert torch.isfinite(loss(torch.randn(2, 3, 5, 5), t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_kernels_report_non_finite_logits(bad, dtype):
    """The forward kernels count non-finite logits themselves (no separate pass): anywhere,
    a partial last tile included, the region and BF1 forwards raise _NonFiniteLogits (score
    then takes the eager path); finite extremes pass."""
    from autoloss_ray.losses._native import _NonFiniteLogits

    g = torch.Generator().manual_seed(5)
    loss = SurrogateLoss.from_preset("bf1", num_classes=3)
    tables = loss._tables_on(torch.device("cpu"), dtype)
    for pos in ((0, 0, 0, 0), (1, 2, 6, 8), (1, 1, 3, 4)):
        z = torch.randn(2, 3, 7, 9, generator=g, dtype=dtype)
        t = torch.randint(0, 3, (2, 7, 9), generator=g)
        w = torch.ones(2, 7, 9, dtype=dtype)
        z[pos] = torch.finfo(dtype).max
        _RegionStatsNative.apply(z, t, w, tables[("bf1", "h1")], None)
        z[pos] = bad
        with pytest.raises(_NonFiniteLogits):
            _RegionStatsNative.apply(z, t, w, tables[("bf1", "h1")], None)
        with pytest.raises(_NonFiniteLogits):
            bf1_counts_native(loss, z, t, t >= 0, tables, dtype)


def test_kernel_buffers_are_plain_tensors():
    """native.empty (the kernels' large outputs, advised to use huge pages) gives an ordinary
    contiguous CPU tensor of the asked shape and dtype, small or large."""
    for shape, dtype in (((3, 5), torch.float32), ((2, 21, 256, 256), torch.float32),
                         ((9, 1 << 20), torch.uint8)):
        t = native.empty(shape, dtype)
        assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
        t.fill_(1)
        assert int(t.sum()) == t.numel()


_MALLOC_CHILD = textwrap.dedent("""
    import resource, torch
    from autoloss_ray import native
    kept = native.keep_freed_memory()
    assert native.keep_freed_memory() == kept  # once per process, the same answer
    faults = []
    for _ in range(16):  # 48 MiB, allocated and freed, as an evaluation's batches do
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(12 << 20, dtype=torch.float32).fill_(1.0)
        del x
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print("KEPT", kept, "FAULTS", max(faults[12:]))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_keep_freed_memory_reuses_a_large_block_and_can_be_switched_off():
    """keep_freed_memory (a CPU evaluation calls it): a 48 MiB block freed and allocated
    again reuses its pages after a few rounds (without it glibc unmaps it: ~12,000 page
    faults each time);
    AUTOLOSS_RAY_MALLOC=0 leaves glibc alone."""
    out = {}
    for flag in ("1", "0"):
        env = dict(os.environ, AUTOLOSS_RAY_MALLOC=flag)
        res = subprocess.run([sys.executable, "-c", _MALLOC_CHILD], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        kept, faults = re.search(r"KEPT (\w+) FAULTS (\d+)", res.stdout).groups()
        out[flag] = (kept, int(faults))
    assert out["1"][0] == "True" and out["1"][1] < 1000, out
    assert out["0"][0] == "False" and out["0"][1] > 10000, out


def _label_pair(g, n, C, H, W, ignore, blob):
    t = torch.randint(0, C, (n, -(-H // blob), -(-W // blob)), generator=g)
    t = t.repeat_interleave(blob, 1).repeat_interleave(blob, 2)[:, :H, :W].contiguous()
    p = t.clone()
    flip = torch.rand(p.shape, generator=g) < 0.15
    p[flip] = torch.randint(0, C, (int(flip.sum()),), generator=g)
    if ignore is not None:
        m = torch.rand(t.shape, generator=g) < 0.1
        t[m] = ignore
        if not 0 <= ignore < C:  # pred may hold the ignore value where the target does
            p[m & (torch.rand(t.shape, generator=g) < 0.5)] = ignore
    return p, t


def _stats_both(p, t, C, ignore, tol, bg, monkeypatch):
    from autoloss_ray.metrics._labels import _check
    from autoloss_ray.metrics.counts import _all_stats

    out = []
    for flag in ("1", "0"):
        monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", flag)
        p2, t2, all_classes = _check(p, t, C, ignore)
        out.append(_all_stats(p2, t2, C, ignore, tol, all_classes, bg))
    return out


@pytest.mark.parametrize("threads", [1, 2])
def test_metric_counts_kernel_equals_the_torch_ops(threads, monkeypatch):
    """_native/metrics.cpp (issue 31) gives the torch path's confusion, band confusion and BF1
    counts exactly: 1 to 63 classes (each bit-word width), ignore 255 / None / a class /
    negative, background None or a class, tolerance 0 to 9 (wider than the image too),
    images down to 1x1, 1 to 5 images on 1 or 2 threads."""
    from autoloss_ray.metrics.counts import _native_stats

    assert native.available()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(11)
        for case in range(120):
            C = (1, 2, 8, 9, 11, 16, 17, 32, 33, 63)[case % 10] if case < 60 else \
                int(torch.randint(1, 64, (1,), generator=g))
            n = 1 + case % 5
            H, W = (int(v) for v in torch.randint(1, 40, (2,), generator=g))
            if case % 13 == 0:
                H = 1
            if case % 17 == 0:
                W = 1
            ignore = (255, None, C - 1, -1)[case % 4]
            bg = None if case % 3 else int(torch.randint(0, C, (1,), generator=g))
            tol = case % 10
            p, t = _label_pair(g, n, C, H, W, ignore, 1 + case % 4)
            (got, want) = _stats_both(p, t, C, ignore, tol, bg, monkeypatch)
            for a, b in zip(got, want):
                assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b), (case, C, ignore)
            monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1")
            assert _native_stats(p, t, C, ignore, tol, bg) is not None
    finally:
        torch.set_num_threads(before)


def test_metric_counts_kernel_is_not_used_where_it_does_not_apply(monkeypatch):
    """No kernel for more than 63 classes, non-int64 maps or AUTOLOSS_RAY_NATIVE=0 (the torch
    path then, the same numbers)."""
    from autoloss_ray.metrics import evaluate
    from autoloss_ray.metrics.counts import _native_stats

    g = torch.Generator().manual_seed(2)
    p, t = _label_pair(g, 2, 70, 20, 30, 255, 2)
    assert _native_stats(p, t, 70, 255, 3, None) is None
    assert _native_stats(p.int(), t.int(), 11, 255, 3, None) is None
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "0")
    assert _native_stats(p % 11, t % 11, 11, 255, 3, None) is None
    off = evaluate(p % 11, t % 11, 11)
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1")
    assert evaluate(p % 11, t % 11, 11) == off


CAMVID = REPO.parent / "shared" / "data" / "camvid"


@pytest.mark.skipif(not (CAMVID / "valannot").is_dir(), reason="no CamVid beside the repo")
def test_metric_counts_kernel_on_camvid_labels(monkeypatch):
    """Real 360x480 label maps (CamVid val, 11 classes, 255 ignored as the dataset loads it)
    against predictions made of other images' labels and of shifted, blurred copies: the
    kernel's counts are the torch path's, both boundary-class settings."""
    from PIL import Image

    names = sorted((CAMVID / "valannot").glob("*.png"))[:6]
    t = torch.stack([torch.from_numpy(np.asarray(Image.open(f)).astype(np.int64))
                     for f in names])
    t[t == 11] = 255
    shifted = torch.roll(t, shifts=(3, -5), dims=(1, 2))
    pred = torch.where(shifted == 255, t.roll(1, 0).clamp(max=10), shifted)
    blocky = t.clamp(max=10)[:, ::8, ::8].repeat_interleave(8, 1).repeat_interleave(8, 2)
    for p in (pred, blocky, t.roll(1, 0).clamp(max=10)):
        for bg in (None, 0):
            got, want = _stats_both(p, t, 11, 255, 5, bg, monkeypatch)
            for a, b in zip(got, want):
                assert torch.equal(a, b)


def test_metric_counts_kernel_checks_the_labels_as_the_torch_check_does(monkeypatch):
    """The accumulator's CPU path leaves the label value check to the counts kernel (issue
    31): for every map pair the kernel refuses exactly what metrics/_labels._check refuses
    (then the same ValueError, from the torch check), and accepts the rest with the same
    metrics: bad target and pred values, negative ones, pred's ignore value where the target
    is not ignored, ignore None / 255 / a class / -1."""
    from autoloss_ray.metrics import MetricAccumulator
    from autoloss_ray.metrics._labels import _check
    from autoloss_ray.metrics.counts import _native_stats

    g = torch.Generator().manual_seed(4)
    refused = 0
    for case in range(80):
        C = (3, 11, 21)[case % 3]
        ignore = (255, None, 0, -1)[case % 4]
        p, t = _label_pair(g, 2, C, 9, 13, ignore, 2)
        k = case % 8
        if k == 1:
            t[0, 1, 2] = C + case % 3  # a target value that is no class
        elif k == 2:
            t[1, 0, 0] = -2
        elif k == 3:
            p[0, 4, 4] = C
        elif k == 4:
            p[1, 2, 3] = -1
        elif k == 5 and ignore is not None:
            p[0, 0, 0], t[0, 0, 0] = ignore, 1  # pred's ignore value on a labelled pixel
        try:
            _check(p, t, C, ignore)
            ok = True
        except ValueError:
            ok = False
        monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1")
        assert (_native_stats(p, t, C, ignore, 2, None) is not None) == ok, case
        results = []
        for flag in ("1", "0"):
            monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", flag)
            acc = MetricAccumulator(C, ignore_index=ignore, boundary_tolerance=2)
            try:
                acc.update(p, t)
                results.append(("ok", acc.compute()))
            except ValueError as exc:
                results.append(("error", str(exc)))
        assert results[0][0] == ("ok" if ok else "error")
        assert str(results[0]) == str(results[1]), case  # nan-safe equality
        refused += not ok
    assert refused >= 30
