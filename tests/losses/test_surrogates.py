"""Surrogate losses: truth table vs exact metrics, gradients, numerics, training, errors, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from autoloss_ray import native
from autoloss_ray.losses import CURVES, SurrogateLoss, metric_curves, search_space
from autoloss_ray.losses.parameterizations import PARAMETERIZATIONS
from autoloss_ray.metrics import METRICS, evaluate

C = 5


@pytest.fixture(params=["native", "eager"], autouse=True)
def backend(request, monkeypatch):
    """Every test here runs on both CPU paths: the fused C++ kernels and eager PyTorch."""
    if request.param == "native" and not native.available():
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1" if request.param == "native" else "0")
    return request.param


def _labels(seed, n=2, h=24, w=20, ignore=True):
    """Blocky label maps (so boundary bands are strict subsets), with ignored pixels and a
    class (3) absent from the target."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, C, (n, h // 4 + 1, w // 4 + 1), generator=g)
    t = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :h, :w].clone()
    t[t == 3] = 1
    if ignore:
        t[:, :5, :4] = 255
        t[0, 10:12, 7:15] = 255
    noise = torch.randint(0, C, (n, h, w), generator=g)
    flip = torch.rand((n, h, w), generator=g) < 0.2
    pred = torch.where(flip, noise, torch.where(t == 255, 0, t))
    pred[:, -6:, -6:] = 4
    return pred, t


def _onehot_logits(pred, scale=1e3):
    return scale * F.one_hot(pred, C).permute(0, 3, 1, 2).float()


def _random_theta(space, rng):
    low = np.maximum(space.low, -4)
    high = np.minimum(space.high, 4)
    th = rng.uniform(low, high)
    faces = (rng.random(space.dim) < 0.2) & np.isfinite(space.low)
    th[faces] = np.where(rng.random(faces.sum()) < 0.5, space.low[faces], space.high[faces])
    return th



def _value_and_grad_in_small_blocks(loss, z, target, block):
    """loss(z, target) and its gradient with the fused code forced into many small blocks
    (``block`` elements, a partial last one included)."""
    import autoloss_ray.losses._eager as S

    old = S._CPU_BLOCK
    S._CPU_BLOCK = block
    try:
        val = loss(z, target)
        (grad,) = torch.autograd.grad(val, z)
    finally:
        S._CPU_BLOCK = old
    return val, grad

@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
@pytest.mark.parametrize("metric", list(METRICS))
def test_truth_table_matches_exact_metric(metric, parameterization):
    rng = np.random.default_rng(hash((metric, parameterization)) % 2**32)
    space = search_space(metric, parameterization)
    for seed in range(3):
        pred, target = _labels(seed)
        ref = evaluate(pred, target, C)
        for _ in range(3):
            loss = SurrogateLoss(metric, num_classes=C, parameterization=parameterization,
                                 theta=_random_theta(space, rng))
            score = loss.score(_onehot_logits(pred), target).item()
            assert score == pytest.approx(ref[metric], abs=2e-5), (seed, metric)


def test_truth_table_sum_and_band_is_a_strict_subset():
    pred, target = _labels(7)
    ref = evaluate(pred, target, C)
    assert ref["biou"] != pytest.approx(ref["miou"])  # the band matters in this fixture
    loss = SurrogateLoss("miou+biou", num_classes=C)
    s = loss.score(_onehot_logits(pred), target)
    assert s.item() == pytest.approx(ref["miou"] + ref["biou"], abs=2e-5)
    assert loss(_onehot_logits(pred), target).item() == pytest.approx(2 - s.item(), abs=1e-6)


def test_truth_table_resized_logits_and_other_ignore_index():
    pred, target = _labels(3, ignore=False)
    target[:, :3] = -1
    ref = evaluate(pred, target, C, ignore_index=-1)
    logits = _onehot_logits(pred)
    up = F.interpolate(logits, scale_factor=2, mode="nearest")
    loss = SurrogateLoss("miou", num_classes=C, ignore_index=-1)
    big_t = target.repeat_interleave(2, 1).repeat_interleave(2, 2)
    big_p = pred.repeat_interleave(2, 1).repeat_interleave(2, 2)
    ref_big = evaluate(big_p, big_t, C, ignore_index=-1)
    assert loss.score(up, big_t).item() == pytest.approx(ref_big["miou"], abs=2e-5)
    assert loss.score(logits, target).item() == pytest.approx(ref["miou"], abs=2e-5)


@pytest.mark.parametrize("metric", list(METRICS) + ["miou+bf1"])
def test_gradcheck_float64(metric):
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (1, 5, 6), generator=g)
    target[0, 0, :2] = 255
    space = search_space(metric, "bezier")
    th = np.random.default_rng(0).uniform(0.1, 0.9, space.dim)
    loss = SurrogateLoss(metric, num_classes=3, theta=th, boundary_tolerance=1)
    z = torch.randn(1, 3, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (z,), eps=1e-6, atol=1e-5)


def _edge_cases():
    t = torch.randint(0, C, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    all_ignored = torch.full_like(t, 255)
    one_class = torch.full_like(t, 2)
    absent = torch.where(t > 1, 0, t)
    return {"random": t, "all_ignored": all_ignored, "one_class": one_class, "absent": absent}


@pytest.mark.parametrize("parameterization", ["bezier", "linear", "identity"])
@pytest.mark.parametrize("metric", list(METRICS))
def test_no_nan_on_edge_cases(metric, parameterization):
    rng = np.random.default_rng(0)
    space = search_space(metric, parameterization)
    thetas = [space.init, _random_theta(space, rng), space.low.clip(-5, 5),
              space.high.clip(-5, 5)]
    g = torch.Generator().manual_seed(2)
    for name, t in _edge_cases().items():
        for scale in (1.0, 1e4):
            for th in thetas:
                z = (scale * torch.randn(2, C, 16, 16, generator=g)).requires_grad_(True)
                loss = SurrogateLoss(metric, num_classes=C, parameterization=parameterization,
                                     theta=th)
                val = loss(z, t)
                val.backward()
                assert torch.isfinite(val), (name, scale)
                assert torch.isfinite(z.grad).all(), (name, scale)
                if name == "all_ignored":
                    assert val.item() == pytest.approx(1.0)
                    assert z.grad.abs().max() == 0


@pytest.mark.parametrize("metric", list(METRICS))
def test_bf16_autocast_cpu(metric):
    pred, target = _labels(4)
    loss = SurrogateLoss.from_preset(metric, num_classes=C)
    z32 = torch.randn(2, C, 24, 20, generator=torch.Generator().manual_seed(0))
    z = z32.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        val = loss(z, target)
    val.backward()
    assert val.dtype == torch.float32 and torch.isfinite(val)
    assert z.grad.dtype == torch.bfloat16 and torch.isfinite(z.grad.float()).all()
    ref = loss(z.detach().float(), target)
    assert val.item() == pytest.approx(ref.item(), abs=1e-5)


def test_blocked_gradient_equals_plain_autograd():
    """The fused blocked function against a straightforward autograd implementation."""
    from autoloss_ray.losses.parameterizations import get_parameterization

    pred, target = _labels(5, n=2, h=40, w=36)
    th = np.random.default_rng(1).uniform(0.05, 0.95, 12)
    loss = SurrogateLoss("miou", num_classes=C, theta=th)
    z = torch.randn(2, C, 40, 36, dtype=torch.float64, requires_grad=True)
    val, g1 = _value_and_grad_in_small_blocks(loss, z, target, 400)
    par = get_parameterization("bezier")
    p = torch.softmax(z, 1)
    valid = (target != 255).unsqueeze(1).double()
    y = F.one_hot(torch.where(target == 255, 0, target), C).permute(0, 3, 1, 2).double() * valid
    inter = (par.curve(th[:6], p) * y * valid).sum((0, 2, 3))
    h = par.curve(th[6:], p)
    union = ((h + y - h * y) * valid).sum((0, 2, 3))
    hard = z.argmax(1)
    present = torch.tensor([bool(((target == c) | ((hard == c) & (target != 255))).any())
                            for c in range(C)])
    ref = 1 - (inter / union)[present].mean()
    (g2,) = torch.autograd.grad(ref, z)
    assert val.item() == pytest.approx(ref.item(), abs=1e-10)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-7)


@pytest.mark.parametrize("metric", list(METRICS))
def test_training_lowers_the_loss(metric):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 24, 24, generator=g)
    target = (x[:, 0] > 0.3).long() + (x[:, 1] > 0.5).long()  # 3 classes from the input
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 1))
    loss_fn = SurrogateLoss.from_preset(metric, num_classes=3, boundary_tolerance=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = loss_fn(model(x), target)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = loss_fn(model(x), target).item()
    assert last < first - 0.02, (first, last)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown metric"):
        SurrogateLoss("dice", num_classes=3)
    with pytest.raises(ValueError, match="unknown parameterization"):
        SurrogateLoss("miou", num_classes=3, parameterization="spline")
    with pytest.raises(ValueError, match="12 numbers"):
        SurrogateLoss("miou", num_classes=3, theta=[0.5] * 11)
    with pytest.raises(ValueError, match="outside its box"):
        SurrogateLoss("miou", num_classes=3, theta=[0.5] * 11 + [1.5])
    with pytest.raises(ValueError, match="finite"):
        SurrogateLoss("miou", num_classes=3, theta=[0.5] * 11 + [float("nan")])
    loss = SurrogateLoss("miou", num_classes=3)
    with pytest.raises(ValueError, match="channels but num_classes=3"):
        loss(torch.randn(1, 4, 5, 5), torch.zeros(1, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size"):
        loss(torch.randn(2, 3, 5, 5), torch.zeros(1, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        loss(torch.randn(1, 3, 5, 5), torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside 0..2"):
        loss(torch.randn(1, 3, 5, 5), torch.full((1, 5, 5), 7))
    with pytest.raises(TypeError):
        loss(torch.randn(1, 3, 5, 5), torch.zeros(1, 5, 5))


def test_search_space_layout():
    sp = search_space("miou+biou")
    assert sp.dim == 24 and sp.names[0] == "miou.and.0" and sp.names[12] == "biou.and.0"
    np.testing.assert_allclose(sp.init[:6], [0.25, 0.25, 1 / 3, 1 / 3, 0.5, 0.5])
    assert sp.contains(sp.init) and not sp.contains(sp.init[:-1])
    assert not sp.contains(np.full(24, 1.1))
    lin = search_space("bf1", "linear")
    assert lin.dim == 20 and np.all(np.isinf(lin.low)) and lin.contains(np.full(20, 100.0))
    assert search_space("gacc", "identity").dim == 0
    for m in METRICS:
        assert search_space(m).dim == 6 * len(CURVES[m])
    # the one table of curves per metric, in theta order, for sums too
    assert metric_curves("miou+biou") == (("miou", "and"), ("miou", "or"), ("biou", "and"),
                                          ("biou", "or"))
    assert metric_curves("bf1") == tuple(("bf1", f"h{i}") for i in range(1, 5))
    assert [(t, c) for t, c, _ in sp.slices] == list(metric_curves("miou+biou"))
    with pytest.raises(ValueError, match="unknown metric"):
        metric_curves("miou+dice")


def test_file_round_trip(tmp_path):
    pred, target = _labels(6)
    sp = search_space("miou+bf1")
    th = np.random.default_rng(0).uniform(0, 1, sp.dim)
    loss = SurrogateLoss("miou+bf1", num_classes=C, theta=th, ignore_index=255,
                         boundary_tolerance=3)
    path = tmp_path / "loss.json"
    loss.to_file(path, meta={"experiment": "x"})
    data = json.loads(path.read_text())
    assert data["format"] == "autoloss-ray/loss" and data["version"] == 1
    assert data["meta"] == {"experiment": "x"} and data["boundary_tolerance"] == 3
    back = SurrogateLoss.from_file(path)
    np.testing.assert_array_equal(back.theta, loss.theta)
    assert back.metric == "miou+bf1" and back.num_classes == C
    z = torch.randn(2, C, 24, 20)
    assert back(z, target).item() == loss(z, target).item()
    assert SurrogateLoss.from_file(path, boundary_tolerance=1).boundary_tolerance == 1
    state = loss.state_dict()
    assert "_theta" in state
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an autoloss-ray loss"):
        SurrogateLoss.from_file(path)


def test_from_preset_and_theta_is_a_copy():
    loss = SurrogateLoss.from_preset("bf1", num_classes=4)
    assert loss.parameterization == "bezier1" and loss.search_space.dim == 8
    th = loss.theta
    th[:] = 0
    assert not np.all(loss.theta == 0)
    assert math.isfinite(loss(torch.randn(1, 4, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
                         .item())


@pytest.mark.parametrize("parameterization", ["bezier", "linear", "bezier1"])
def test_fused_bf1_equals_plain_autograd(parameterization):
    """The fused soft boundary (BF1) against a straightforward autograd implementation."""
    from autoloss_ray.losses.parameterizations import get_parameterization

    pred, target = _labels(7, n=2, h=30, w=28)
    space = search_space("bf1", parameterization)
    th = _random_theta(space, np.random.default_rng(3))
    r = 2
    loss = SurrogateLoss("bf1", num_classes=C, parameterization=parameterization, theta=th,
                         boundary_tolerance=r)
    g = torch.Generator().manual_seed(4)
    z = (3 * torch.randn(2, C, 30, 28, generator=g, dtype=torch.float64)
         + 4 * _onehot_logits(pred, 1.0).double()).requires_grad_(True)
    val, g1 = _value_and_grad_in_small_blocks(loss, z, target, 500)

    par = get_parameterization(parameterization)
    d = par.dim_per_curve
    h = [lambda x, k=k: par.curve(th[k * d:(k + 1) * d], x) for k in range(4)]
    k = 2 * r + 1
    p = torch.softmax(z, 1)
    e = -F.max_pool2d(-p, 3, 1, 1)
    b = (h[2](p) + h[3](e) - h[2](p) * h[3](e) - h[0](p) * h[1](e)).clamp(min=0.0)
    db = F.max_pool2d(F.max_pool2d(b, (k, 1), 1, (r, 0)), (1, k), 1, (0, r))
    valid = (target != 255).unsqueeze(1)
    tm = F.one_hot(torch.where(target == 255, 0, target), C).permute(0, 3, 1, 2).bool() & valid
    tf = tm.double()
    bg = tf - (-F.max_pool2d(-tf, 3, 1, 1))
    dbg = F.max_pool2d(F.max_pool2d(bg, (k, 1), 1, (r, 0)), (1, k), 1, (0, r))
    pm = F.one_hot(z.argmax(1), C).permute(0, 3, 1, 2).double()
    bp = (pm - (-F.max_pool2d(-pm, 3, 1, 1))) * valid
    v = valid.double()
    n_p, m_p = (b * v).sum((0, 2, 3)), (b * v * dbg).sum((0, 2, 3))
    n_g, m_g = (bg * v).sum((0, 2, 3)), (db * bg * v).sum((0, 2, 3))
    prec, rec = m_p / n_p.clamp(min=1e-6), m_g / n_g.clamp(min=1e-6)
    f1 = 2 * prec * rec / (prec + rec).clamp(min=1e-6)
    sel = (n_g > 0) | (bp.sum((0, 2, 3)) > 0)
    assert 0 < int(sel.sum())
    ref = 1 - f1[sel].mean()
    (g2,) = torch.autograd.grad(ref, z)
    assert val.item() == pytest.approx(ref.item(), abs=1e-10)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-7)
    assert g1.abs().max() > 0


@pytest.mark.parametrize("r", [0, 1, 3, 40])
def test_window_max_at_sites_equals_autograd_through_dilate_with_ties(r):
    """BF1's sparse tolerance dilation: same values and the same gradient as autograd through
    morphology.dilate's separable max-pooling, on maps full of exact ties (zeros and a few
    repeated levels), sites on the image border included, windows larger than the image."""
    from autoloss_ray.losses._boundary import _window_max_at
    from autoloss_ray.morphology import dilate

    g = torch.Generator().manual_seed(r)
    b = (torch.randint(0, 4, (2, 3, 13, 17), generator=g).double() / 3).requires_grad_(True)
    sites = torch.rand(2, 3, 13, 17, generator=g) < 0.3
    sites[0, 0, 0, :] = True
    sites[1, 2, :, -1] = True
    weight = torch.rand(3, generator=g, dtype=torch.float64)  # distinct per class

    vals, cls = _window_max_at(b, sites, r)
    ours = (vals * weight[cls]).sum()
    (g1,) = torch.autograd.grad(ours, b)
    ref = (dilate(b, r) * sites * weight.view(1, 3, 1, 1)).sum()
    (g2,) = torch.autograd.grad(ref, b)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-12)
    assert torch.equal(g1 != 0, g2 != 0)  # the same pixels get gradient (tie routing)
    torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)  # up to summation order
    assert int((g1 != 0).sum()) > 0


@pytest.mark.parametrize("metric", list(METRICS))
def test_create_graph_is_a_clear_error(metric):
    """The fused backwards compute first derivatives only (a second derivative needs h'' and
    the saved derivatives' own dependence on z): create_graph=True is refused with a message,
    rather than giving a graph whose second derivatives are silently partial or missing."""
    loss = SurrogateLoss.from_preset(metric, num_classes=3, boundary_tolerance=1)
    z = torch.randn(1, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (1, 9, 8))
    with pytest.raises(RuntimeError, match="first derivatives only.*create_graph"):
        torch.autograd.grad(loss(z, t), z, create_graph=True)
    (g,) = torch.autograd.grad(loss(z, t), z)  # first order still fine afterwards
    assert torch.isfinite(g).all() and g.abs().max() > 0


def test_fast_argmax_equals_argmax_with_ties():
    from autoloss_ray.losses._boundary import _argmax1

    g = torch.Generator().manual_seed(0)
    for z in (torch.randn(2, 7, 5, 6, generator=g),
              torch.randint(0, 3, (3, 9, 4, 5), generator=g).float(),  # many exact ties
              torch.zeros(1, 4, 3, 3), torch.randn(1, 1, 3, 3, generator=g),
              torch.randn(2, 5, 4, 4, generator=g, dtype=torch.float64)[:, :, ::2]):
        assert torch.equal(_argmax1(z), z.argmax(1)), z.shape


def test_bool_dilation_equals_morphology_dilate():
    """The shifted-slice dilation of bool maps (BF1's target band) equals the float max-pool
    of morphology.dilate."""
    from autoloss_ray.morphology import dilate

    g = torch.Generator().manual_seed(0)
    for shape, r in [((2, 3, 40, 37), 5), ((1, 2, 4, 3), 5), ((1, 1, 1, 1), 2),
                     ((2, 2, 13, 9), 1), ((1, 2, 6, 7), 0), ((1, 1, 30, 30), 3)]:
        x = torch.rand(shape, generator=g) < 0.05
        x[..., 0, 0] = True
        assert torch.equal(dilate(x, r), dilate(x.float(), r).bool()), (shape, r)


def test_bool_boundaries_equal_morphology_boundaries():
    """The shifted-slice boundaries of bool maps equal mask - erode3x3(mask) on floats."""
    from autoloss_ray.morphology import boundaries

    g = torch.Generator().manual_seed(1)
    for shape in [(2, 3, 40, 37), (1, 2, 4, 3), (1, 1, 1, 1), (1, 2, 1, 7), (2, 2, 13, 9)]:
        for frac in (0.3, 0.9):
            x = torch.rand(shape, generator=g) < frac
            assert torch.equal(boundaries(x), boundaries(x.float()).bool()), (shape, frac)


def test_prepare_places_the_curve_tables_once_and_changes_nothing():
    """``prepare`` builds and places the tables before the first call (a training loop calls it
    outside its loop); the loss value is the same, and the call does not place them again."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 12, 10)
    target = torch.randint(0, 4, (2, 12, 10))
    theta = search_space("miou+bf1", "bezier").init
    plain = SurrogateLoss("miou+bf1", num_classes=4, theta=theta)
    ready = SurrogateLoss("miou+bf1", num_classes=4, theta=theta)
    ready.prepare("cpu", torch.float32)
    placed = ready._placed[(torch.device("cpu"), torch.float32)]
    assert len(placed) == len(metric_curves("miou+bf1"))
    assert torch.equal(ready(logits, target), plain(logits, target))
    assert ready._placed[(torch.device("cpu"), torch.float32)] is placed  # not placed again
    with torch.no_grad():  # a new theta drops the placed tables
        ready._theta.add_(0.0)
    ready.curve_tables()
    assert ready._placed == {}
