"""boundary_classes="foreground": the official VOC evaluation's ``drop_bg`` as an option.

The BIoU band is built from the target boundaries of every class but ``background_index``, and
BF1 averages over those classes only. Checked against a brute-force reference (scipy.ndimage
per class and plain loops), on the exact metrics and on the surrogate (native and eager paths:
truth-table property, and the paths against each other); the default "all" is unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from autoloss_ray import MetricAccumulator, SurrogateLoss, evaluate, native
from autoloss_ray.metrics import boundary_band

C = 5
IGNORE = 255


def _labels(seed: int, n: int = 2, h: int = 23, w: int = 29, *, ignore: bool = True):
    """Blocky random label maps (so boundaries are structured) with an ignored corner."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, C, (n, (h + 3) // 4, (w + 3) // 4))
    t = np.repeat(np.repeat(t, 4, 1), 4, 2)[:, :h, :w].copy()
    # background (0) as a large region, as in VOC
    t[:, h // 2:, : w // 2] = 0
    if ignore:
        t[:, :3, -5:] = IGNORE
    p = t.copy()
    flip = rng.random(p.shape) < 0.15
    p[flip] = rng.integers(0, C, int(flip.sum()))
    p[t == IGNORE] = rng.integers(0, C, int((t == IGNORE).sum()))
    return p, t


# ---- brute-force reference (scipy.ndimage per class, numpy loops) ---------------------------


def _ref_boundary(mask: np.ndarray) -> np.ndarray:
    """B = mask & ~erode3x3(mask), outside the image counts as inside."""
    return mask & ~ndimage.binary_erosion(mask, np.ones((3, 3), bool), border_value=1)


def _ref_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    if r == 0:
        return mask
    return ndimage.binary_dilation(mask, np.ones((2 * r + 1, 2 * r + 1), bool), border_value=0)


def _ref_metrics(pred, target, r, skip):
    """BIoU and BF1 with the band from classes != skip and BF1 over classes != skip."""
    classes = [c for c in range(C) if c != skip]
    cm = np.zeros((C, C), np.int64)
    n_p = np.zeros(C)
    n_g = np.zeros(C)
    m_p = np.zeros(C)
    m_g = np.zeros(C)
    bands = []
    for p, t in zip(pred, target):
        valid = t != IGNORE
        union = np.zeros(t.shape, bool)
        for c in classes:
            union |= _ref_boundary(t == c)
        band = _ref_dilate(union, r)
        bands.append(band)
        for y in range(t.shape[0]):
            for x in range(t.shape[1]):
                if band[y, x] and valid[y, x]:
                    cm[t[y, x], p[y, x]] += 1
        for c in range(C):
            bp, bg = _ref_boundary(p == c), _ref_boundary(t == c)
            n_p[c] += (bp & valid).sum()
            n_g[c] += (bg & valid).sum()
            m_p[c] += (bp & _ref_dilate(bg, r) & valid).sum()
            m_g[c] += (bg & _ref_dilate(bp, r) & valid).sum()
    ious = []
    for c in range(C):
        denom = cm[c].sum() + cm[:, c].sum() - cm[c, c]
        if denom > 0:
            ious.append(cm[c, c] / denom)
    f1s = []
    for c in classes:
        if n_p[c] + n_g[c] == 0:
            continue
        prec = m_p[c] / n_p[c] if n_p[c] else 0.0
        rec = m_g[c] / n_g[c] if n_g[c] else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return float(np.mean(ious)), float(np.mean(f1s)), np.stack(bands)


@pytest.mark.parametrize("background", [0, 3])
@pytest.mark.parametrize("r", [0, 2])
def test_exact_metrics_against_brute_force(background, r):
    pred, target = _labels(background * 10 + r)
    got_fg = evaluate(pred, target, C, boundary_tolerance=r, boundary_classes="foreground",
                      background_index=background)
    got_all = evaluate(pred, target, C, boundary_tolerance=r)
    biou, bf1, band = _ref_metrics(pred, target, r, skip=background)
    biou_all, bf1_all, band_all = _ref_metrics(pred, target, r, skip=None)
    assert got_fg["biou"] == pytest.approx(biou, abs=1e-12)
    assert got_fg["bf1"] == pytest.approx(bf1, abs=1e-12)
    assert got_all["biou"] == pytest.approx(biou_all, abs=1e-12)
    assert got_all["bf1"] == pytest.approx(bf1_all, abs=1e-12)
    # the option matters on this input, and only for the boundary metrics
    assert band.sum() < band_all.sum()
    assert got_fg["bf1"] != got_all["bf1"]
    for m in ("miou", "fwiou", "macc", "gacc"):
        assert got_fg[m] == got_all[m]
    np.testing.assert_array_equal(
        boundary_band(target, C, tolerance=r, boundary_classes="foreground",
                      background_index=background).numpy(), band)
    np.testing.assert_array_equal(boundary_band(target, C, tolerance=r).numpy(), band_all)


def test_accumulator_streams_the_option():
    pred, target = _labels(7, n=3)
    acc = MetricAccumulator(C, boundary_tolerance=2, boundary_classes="foreground")
    for k in range(3):
        acc.update(pred[k], target[k])
    assert acc.compute() == evaluate(pred, target, C, boundary_tolerance=2,
                                     boundary_classes="foreground")
    assert acc.boundary_classes == "foreground" and acc.background_index == 0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"boundary_classes": "background"}, ValueError, "boundary_classes must be one of"),
        ({"boundary_classes": None}, ValueError, "boundary_classes must be one of"),
        ({"boundary_classes": "foreground", "background_index": C}, ValueError,
         "background_index must be a class in 0..4"),
        ({"background_index": -1}, ValueError, "background_index"),
        ({"background_index": "0"}, TypeError, "background_index must be an int"),
        ({"background_index": True}, TypeError, "background_index must be an int"),
    ],
)
def test_bad_options(kwargs, exc, match):
    pred, target = _labels(0)
    with pytest.raises(exc, match=match):
        evaluate(pred, target, C, **kwargs)
    with pytest.raises(exc, match=match):
        MetricAccumulator(C, **kwargs)
    with pytest.raises(exc, match=match):
        SurrogateLoss("biou", num_classes=C, **kwargs)
    with pytest.raises(exc, match=match):
        boundary_band(target, C, **kwargs)


# ---- the surrogate ---------------------------------------------------------------------------

PATHS = ["native", "eager"]


def _set_path(path, monkeypatch):
    if path == "native" and not native.available():
        pytest.skip("no fused kernels on this machine")
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1" if path == "native" else "0")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("metric", ["biou", "bf1"])
@pytest.mark.parametrize("background", [0, 2])
def test_truth_table_with_foreground(metric, background, path, monkeypatch):
    """One-hot logits: the soft score equals the exact metric, for presets and random theta."""
    _set_path(path, monkeypatch)
    pred, target = _labels(3 + background)
    logits = 1e3 * torch.nn.functional.one_hot(torch.from_numpy(pred), C).permute(0, 3, 1, 2)
    logits = logits.to(torch.float64)
    t = torch.from_numpy(target)
    exact = evaluate(pred, target, C, boundary_tolerance=2, boundary_classes="foreground",
                     background_index=background)[metric]
    exact_all = evaluate(pred, target, C, boundary_tolerance=2)[metric]
    assert exact != exact_all  # the option changes this batch's number
    rng = np.random.default_rng(background)
    losses = [SurrogateLoss.from_preset(metric, num_classes=C, boundary_tolerance=2,
                                        boundary_classes="foreground",
                                        background_index=background)]
    space = losses[0].search_space
    losses.append(SurrogateLoss(metric, num_classes=C, boundary_tolerance=2,
                                parameterization=space.parameterization, theta=rng.uniform(space.low, space.high),
                                boundary_classes="foreground", background_index=background))
    for loss in losses:
        assert float(loss.score(logits, t)) == pytest.approx(exact, abs=1e-9)


@pytest.mark.parametrize("metric", ["biou", "bf1", "miou+biou"])
def test_native_equals_eager_with_foreground(metric, monkeypatch):
    if not native.available():
        pytest.skip("no fused kernels on this machine")
    pred, target = _labels(11)
    g = torch.Generator().manual_seed(11)
    z = 2 * torch.randn(pred.shape[0], C, *pred.shape[1:], generator=g, dtype=torch.float64)
    t = torch.from_numpy(target)
    loss = SurrogateLoss(metric, num_classes=C, boundary_tolerance=2,
                         boundary_classes="foreground")
    out = []
    for flag in ("1", "0"):
        monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", flag)
        x = z.clone().requires_grad_(True)
        val = loss(x, t)
        (grad,) = torch.autograd.grad(val, x)
        out.append((val.detach(), grad))
    torch.testing.assert_close(out[0][0], out[1][0], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-12, rtol=1e-10)
    # and the option changes the loss
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "0")
    default = SurrogateLoss(metric, num_classes=C, boundary_tolerance=2)(z, t)
    assert abs(float(default) - float(out[1][0])) > 1e-6


def test_loss_file_keeps_the_option(tmp_path):
    loss = SurrogateLoss.from_preset("biou", num_classes=C, boundary_classes="foreground",
                                     background_index=2)
    path = tmp_path / "loss.json"
    loss.to_file(path)
    back = SurrogateLoss.from_file(path)
    assert (back.boundary_classes, back.background_index) == ("foreground", 2)
    assert SurrogateLoss.from_file(path, boundary_classes="all").boundary_classes == "all"
    # a file written before the option existed loads as "all"
    d = loss.to_dict()
    del d["boundary_classes"], d["background_index"]
    old = SurrogateLoss.from_dict(d)
    assert (old.boundary_classes, old.background_index) == ("all", 0)
