"""Baseline losses against independent references (numpy loops, scipy filters, brute force)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from autoloss_ray.losses.baselines import (
    BASELINES,
    CrossEntropyLoss,
    DiceLoss,
    DPCELoss,
    LovaszSoftmaxLoss,
    SSIMLoss,
    WeightedCrossEntropyLoss,
    boundary_distance,
    class_frequency_weights,
    cross_entropy,
    dpce_weights,
    make_loss,
)

IGN = 255
NAMES = ("ce", "wce", "dpce", "ssim", "dice", "lovasz")


def _batch(seed: int, n: int = 2, c: int = 4, h: int = 7, w: int = 6, ignore_frac: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_frac] = IGN
    return logits, target


def _blocky_target(seed: int, n: int = 2, c: int = 4, h: int = 10, w: int = 9) -> torch.Tensor:
    """Piecewise-constant labels (rectangles) with an ignored stripe: real boundaries."""
    rng = np.random.default_rng(seed)
    t = np.zeros((n, h, w), dtype=np.int64)
    for i in range(n):
        t[i] = rng.integers(c)
        for _ in range(3):
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            t[i, y0 : y0 + rng.integers(2, 6), x0 : x0 + rng.integers(2, 6)] = rng.integers(c)
        t[i, :, rng.integers(w)] = IGN
    return torch.from_numpy(t)


def _make(name: str, c: int, **kw):
    if name == "wce" and "weight" not in kw:
        kw["weight"] = torch.linspace(0.5, 2.0, c)
    return make_loss(name, num_classes=c, **kw)


def _np_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------


def _ref_nll(logits: np.ndarray, target: np.ndarray):
    """Per valid pixel: (n, i, j, label, nll) by an explicit loop."""
    out = []
    n, c, h, w = logits.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                t = target[b, i, j]
                if t == IGN:
                    continue
                z = logits[b, :, i, j]
                lse = math.log(sum(math.exp(v) for v in z))
                out.append((b, i, j, int(t), lse - z[t]))
    return out


def test_cross_entropy_matches_manual_log_softmax_loop():
    logits, target = _batch(0)
    ref = _ref_nll(logits.numpy(), target.numpy())
    expected = sum(r[4] for r in ref) / len(ref)
    got = CrossEntropyLoss(num_classes=4)(logits, target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_cross_entropy_matches_manual_loop_and_torch():
    logits, target = _batch(1)
    w = np.array([0.3, 1.0, 2.5, 4.0])
    ref = _ref_nll(logits.numpy(), target.numpy())
    expected = sum(w[r[3]] * r[4] for r in ref) / sum(w[r[3]] for r in ref)
    got = WeightedCrossEntropyLoss(w, num_classes=4)(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    torch_ref = F.cross_entropy(logits, target, weight=torch.tensor(w), ignore_index=IGN)
    assert got.item() == pytest.approx(torch_ref.item(), rel=1e-5)
    assert cross_entropy(logits, target, weight=w).item() == pytest.approx(expected, rel=1e-5)


def test_class_frequency_weights_by_hand():
    a = np.array([[0, 0, 0, 1], [0, 0, 255, 255]])  # 5x class 0, 1x class 1
    b = torch.tensor([[[2, 2], [0, 255]]])  # batch form: 2x class 2, 1x class 0
    counts = np.array([6, 1, 2, 0])
    p = counts / 9
    w = class_frequency_weights([a, b], 4, IGN)
    np.testing.assert_allclose(w.numpy(), 1 / np.log(1.02 + p), rtol=1e-6)
    assert w.dtype == torch.float32 and w[3] == pytest.approx(1 / math.log(1.02))
    # median frequency: image a has 6 valid pixels (classes 0, 1), image b 3 (classes 0, 2)
    freq = np.array([6 / 9, 1 / 6, 2 / 3])
    med = np.median(freq)
    expected = np.append(med / freq, (med / freq).max())
    wm = class_frequency_weights(iter([a, b]), 4, ignore_index=IGN, method="median_frequency")
    np.testing.assert_allclose(wm.numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="method"):
        class_frequency_weights([a], 4, method="sqrt")
    with pytest.raises(ValueError, match="no valid"):
        class_frequency_weights([np.full((2, 2), IGN)], 4)
    with pytest.raises(ValueError, match="outside"):
        class_frequency_weights([np.array([[0, 7]])], 4)
    with pytest.raises(TypeError):
        class_frequency_weights([np.zeros((2, 2), dtype=np.float32)], 4)


def _ref_boundary(t: np.ndarray) -> np.ndarray:
    """Valid pixel with an in-image 8-neighbour carrying another value (class or ignore)."""
    h, w = t.shape
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            if t[i, j] == IGN:
                continue
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    ii, jj = i + di, j + dj
                    if 0 <= ii < h and 0 <= jj < w and t[ii, jj] != t[i, j]:
                        out[i, j] = True
    return out


def _ref_distance(t: np.ndarray) -> np.ndarray:
    b = _ref_boundary(t)
    pts = list(zip(*np.nonzero(b)))
    h, w = t.shape
    d = np.full((h, w), np.inf)
    for i in range(h):
        for j in range(w):
            for bi, bj in pts:
                d[i, j] = min(d[i, j], math.hypot(i - bi, j - bj))
    return d


def test_dpce_distance_and_weights_match_brute_force():
    target = _blocky_target(2)
    target[1] = 3  # second image: one class, no boundary -> distance inf, weight 1
    target[1, 0, 0] = IGN
    d = boundary_distance(target, 4, ignore_index=IGN).numpy()
    for b in range(2):
        np.testing.assert_allclose(d[b], _ref_distance(target[b].numpy()), rtol=1e-6)
    # image 1: the only boundary is the ring of valid pixels around its ignored corner
    assert d[1][0, 1] == d[1][1, 0] == d[1][1, 1] == 0
    assert d[1][4, 4] == pytest.approx(math.hypot(3, 3))
    w = dpce_weights(target, 4, ignore_index=IGN, alpha=2.0, sigma=3.0).numpy()
    ref = 1 + 2.0 * np.exp(-np.stack([_ref_distance(t.numpy()) for t in target]) / 3.0)
    ref[target.numpy() == IGN] = 0
    np.testing.assert_allclose(w, ref, rtol=1e-6)
    # no boundary at all: infinite distance, weight exactly 1
    flat = torch.full((1, 5, 5), 2)
    assert torch.isinf(boundary_distance(flat, 4)).all()
    assert (dpce_weights(flat, 4) == 1).all()


def test_dpce_loss_matches_weighted_manual_nll():
    target = _blocky_target(3)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 10, 9, generator=g, dtype=torch.float64)
    dist = np.stack([_ref_distance(t.numpy()) for t in target])
    ref = _ref_nll(logits.numpy(), target.numpy())
    weighted = [(1 + 1.5 * math.exp(-dist[b, i, j] / 4.0)) * v for b, i, j, _, v in ref]
    expected = sum(weighted) / len(ref)
    got = DPCELoss(num_classes=4, alpha=1.5, sigma=4.0)(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def _ref_ssim_loss(logits: np.ndarray, target: np.ndarray) -> float:
    n, c = logits.shape[:2]
    valid = target != IGN
    p = _np_softmax(logits, 1) * valid[:, None]
    y = (target[:, None] == np.arange(c)[None, :, None, None]) * valid[:, None]
    c1, c2 = 0.01**2, 0.03**2

    def g(x):  # 11x11 Gaussian, sigma 1.5, replicate padding (scipy 'nearest')
        return gaussian_filter(x, sigma=1.5, radius=5, mode="nearest")

    total = 0.0
    for b in range(n):
        for k in range(c):
            x, t = p[b, k].astype(np.float64), y[b, k].astype(np.float64)
            mx, my = g(x), g(t)
            vx, vy, cxy = g(x * x) - mx**2, g(t * t) - my**2, g(x * t) - mx * my
            s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            total += (1 - s)[valid[b]].sum()
    return total / (c * valid.sum())


@pytest.mark.parametrize("shape", [(2, 3, 14, 13), (1, 4, 5, 4)])
def test_ssim_matches_scipy_gaussian_filter(shape):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[:, : h // 3, : w // 2] = 1
    target[0, -2:, :] = IGN
    got = SSIMLoss(num_classes=c)(logits, target)
    assert got.item() == pytest.approx(_ref_ssim_loss(logits.numpy(), target.numpy()), rel=1e-4)
    # perfect prediction -> SSIM 1 everywhere (ignored zeroed in both) -> loss ~ 0
    safe = torch.where(target == IGN, 0, target)
    perfect = 60.0 * F.one_hot(safe, c).permute(0, 3, 1, 2).double()
    assert SSIMLoss(num_classes=c)(perfect, target).item() < 1e-5


def _ref_dice(logits: np.ndarray, target: np.ndarray, eps: float = 1.0) -> float:
    n, c = logits.shape[:2]
    p = _np_softmax(logits, 1)
    pred = logits.argmax(1)
    terms = []
    for k in range(c):
        inter = sp = sy = 0.0
        present = False
        for b in range(n):
            for i in range(target.shape[1]):
                for j in range(target.shape[2]):
                    if target[b, i, j] == IGN:
                        continue
                    yk = float(target[b, i, j] == k)
                    inter += p[b, k, i, j] * yk
                    sp += p[b, k, i, j]
                    sy += yk
                    present |= yk > 0 or pred[b, i, j] == k
        if present:
            terms.append(1 - (2 * inter + eps) / (sp + sy + eps))
    return float(np.mean(terms)) if terms else 0.0


def test_dice_matches_hand_formula_and_class_set():
    logits, target = _batch(5, c=5)
    target[target == 4] = 0  # class 4 absent from the target...
    logits[0, 4, 0, 0] = 50.0  # ...but predicted at one pixel
    target[0, 0, 0] = 1
    logits[:, 3] -= 50.0  # class 3 never predicted, but in the target
    got = DiceLoss(num_classes=5)(logits, target)
    assert got.item() == pytest.approx(_ref_dice(logits.numpy(), target.numpy()), rel=1e-5)
    assert DiceLoss(num_classes=5, eps=1e-3)(logits, target).item() == pytest.approx(
        _ref_dice(logits.numpy(), target.numpy(), eps=1e-3), rel=1e-5
    )
    # a class neither in the target nor predicted is left out of the mean
    logits[:, 4] -= 100.0
    target[0, 0, 0] = 3
    ref = _ref_dice(logits.numpy(), target.numpy())
    assert DiceLoss(num_classes=5)(logits, target).item() == pytest.approx(ref, rel=1e-5)
    all_classes = (4 * ref + 0.0) / 5  # what averaging over all 5 classes would give (dice 1)
    assert abs(ref - all_classes) > 1e-3


def _ref_lovasz(logits: np.ndarray, target: np.ndarray) -> float:
    """Lovasz extension of the Jaccard loss by definition: loop over sorted prefixes."""
    c = logits.shape[1]
    p = np.moveaxis(_np_softmax(logits, 1), 1, -1)[target != IGN]  # [P, C]
    labels = target[target != IGN]
    losses = []
    for k in range(c):
        fg = labels == k
        if not fg.any():
            continue
        errors = np.abs(fg.astype(float) - p[:, k])
        order = sorted(range(len(errors)), key=lambda i: -errors[i])
        gt = {i for i in range(len(fg)) if fg[i]}

        def jaccard_loss(mistakes: set) -> float:  # |M| / |G u M|
            return len(mistakes) / len(gt | mistakes) if mistakes else 0.0  # noqa: B023

        total, prefix, prev = 0.0, set(), 0.0
        for i in order:
            prefix = prefix | {i}
            cur = jaccard_loss(prefix)
            total += errors[i] * (cur - prev)
            prev = cur
        losses.append(total)
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("seed", [6, 7])
def test_lovasz_matches_definition_by_brute_force(seed):
    logits, target = _batch(seed, n=2, c=4, h=5, w=4)
    target[target == 2] = 1  # an absent class must not count ("present")
    got = LovaszSoftmaxLoss(num_classes=4)(logits, target)
    assert got.item() == pytest.approx(_ref_lovasz(logits.numpy(), target.numpy()), rel=1e-5)


def test_lovasz_perfect_prediction_is_zero_and_worst_is_one():
    target = _blocky_target(8, c=3)
    safe = torch.where(target == IGN, 0, target)
    good = 100.0 * F.one_hot(safe, 3).permute(0, 3, 1, 2).float()
    assert LovaszSoftmaxLoss()(good, target).item() == pytest.approx(0.0, abs=1e-6)
    bad = 100.0 * F.one_hot((safe + 1) % 3, 3).permute(0, 3, 1, 2).float()
    assert LovaszSoftmaxLoss()(bad, target).item() == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# ignore handling, all-ignored, resize, precision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_ignored_pixels_have_no_influence(name):
    logits, target = _batch(9)
    logits.requires_grad_(True)
    loss = _make(name, 4)
    value = loss(logits, target)
    value.backward()
    ign = (target == IGN).unsqueeze(1).expand_as(logits)
    assert ign.any() and torch.isfinite(logits.grad).all()
    assert (logits.grad[ign] == 0).all()
    assert logits.grad[~ign].abs().sum() > 0
    changed = logits.detach().clone()
    changed[ign] = torch.randn(int(ign.sum()), dtype=changed.dtype) * 10
    assert loss(changed, target).item() == pytest.approx(value.item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_ignore_index_inside_class_range(name):
    logits, target = _batch(10)
    target = torch.where(target == IGN, 0, target)  # label 0 plays the ignore role...
    remapped = torch.where(target == 0, IGN, target)  # ...and equals 255 in the default setup
    kw = {"weight": torch.tensor([0.0, 1.0, 2.0, 3.0])} if name == "wce" else {}
    a = make_loss(name, num_classes=4, ignore_index=0, **kw)(logits, target)
    b = make_loss(name, num_classes=4, **kw)(logits, remapped)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_ignored_gives_zero_and_finite_grad(name, dtype):
    logits = torch.randn(2, 3, 6, 5, dtype=dtype, requires_grad=True)
    target = torch.full((2, 6, 5), IGN)
    value = _make(name, 3)(logits, target)
    assert value.item() == 0.0 and value.dtype == torch.float32
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_logits_are_resized_bilinearly_to_label_size(name):
    g = torch.Generator().manual_seed(11)
    small = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    target = _blocky_target(11, c=3, h=8, w=10)
    loss = _make(name, 3)
    value = loss(small, target)
    up = F.interpolate(small.detach(), size=(8, 10), mode="bilinear", align_corners=False)
    assert value.item() == pytest.approx(loss(up, target).item(), rel=1e-5)
    value.backward()
    assert small.grad.shape == small.shape and small.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_computes_in_float32(name):
    logits, target = _batch(12, c=3)
    x = logits.float().bfloat16().requires_grad_(True)
    loss = _make(name, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(loss(x.detach().float(), target).item(), rel=1e-6)
    value.backward()
    assert torch.isfinite(x.grad.float()).all()


def test_extreme_logits_are_finite():
    logits, target = _batch(13, c=3)
    logits = (logits.sign() * 1e4).float().requires_grad_(True)
    for name in NAMES:
        logits.grad = None
        value = _make(name, 3)(logits, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name):
    logits, target = _batch(14, c=3)
    logits = logits.float()
    loss = _make(name, 3)
    cpu = loss(logits, target)
    gpu = loss.to("cuda")(logits.cuda(), target.cuda())
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# registry and bad inputs
# ---------------------------------------------------------------------------------------------


def test_registry_and_make_loss():
    assert set(BASELINES) == set(NAMES)
    for name in NAMES:
        loss = _make(name, 5, ignore_index=7)
        assert isinstance(loss, BASELINES[name]) and isinstance(loss, nn.Module)
        assert loss.num_classes == 5 and loss.ignore_index == 7
    with pytest.raises(ValueError, match="valid names.*ce.*dice"):
        make_loss("focal", num_classes=3)
    with pytest.raises(ValueError, match="class_frequency_weights"):
        make_loss("wce", num_classes=3)
    with pytest.raises(ValueError, match="3 entries"):
        make_loss("wce", num_classes=4, weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=">= 0"):
        make_loss("wce", num_classes=2, weight=[1.0, -1.0])
    with pytest.raises(TypeError, match="unsupported option"):
        make_loss("ce", num_classes=3, sigma=2.0)
    with pytest.raises(ValueError, match="sigma"):
        make_loss("dpce", num_classes=3, sigma=0.0)
    for bad in (4, -1, 0):
        with pytest.raises(ValueError, match="odd"):
            make_loss("ssim", num_classes=3, window_size=bad)
    # weights travel with the module (buffer) and the state dict
    wce = make_loss("wce", num_classes=2, weight=[1.0, 3.0])
    assert torch.equal(wce.state_dict()["weight"], torch.tensor([1.0, 3.0]))


@pytest.mark.parametrize(
    "logits, target, match",
    [
        (torch.randn(2, 3, 4), torch.zeros(2, 4, 4, dtype=torch.long), r"\[N, C, h, w\]"),
        (torch.randn(2, 3, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.long), r"\[N, H, W\]"),
        (torch.randn(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long), "batch size"),
        (torch.randn(2, 4, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), "num_classes=3"),
        (torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 3), r"outside \[0, 3\).*\[3\]"),
        (torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), -1), "outside"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error(name, logits, target, match):
    with pytest.raises(ValueError, match=match):
        _make(name, 3)(logits, target)


@pytest.mark.parametrize("name", NAMES)
def test_bad_types_raise_type_error(name):
    loss = _make(name, 3)
    with pytest.raises(TypeError, match="integer"):
        loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        loss(torch.zeros(1, 3, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="tensor"):
        loss(np.zeros((1, 3, 4, 4), np.float32), torch.zeros(1, 4, 4, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# training lowers each loss
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_training_lowers_the_loss(name):
    torch.manual_seed(0)
    c = 3
    target = _blocky_target(15, n=4, c=c, h=16, w=16)
    safe = torch.where(target == IGN, 0, target)
    x = F.one_hot(safe, c).permute(0, 3, 1, 2).float()
    x = x + 0.8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    model = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, c, 3, padding=1))
    loss = _make(name, c)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    with torch.no_grad():
        initial = loss(model(x), target).item()
    for _ in range(40):
        opt.zero_grad()
        value = loss(model(x), target)
        value.backward()
        opt.step()
    with torch.no_grad():
        final = loss(model(x), target).item()
    assert math.isfinite(final) and final < 0.5 * initial, (initial, final)
