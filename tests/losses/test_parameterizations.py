"""Curves: endpoints, monotonicity, identity, Bezier vs an independent evaluation, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoloss_ray.losses.parameterizations import (
    PARAMETERIZATIONS,
    Workspace,
    evaluate_table,
    evaluate_table_into,
    get_parameterization,
)
from autoloss_ray.losses.presets import PRESETS, control_points_to_theta, preset_theta

NAMES = list(PARAMETERIZATIONS)


def _random_theta(par, rng, faces=False):
    if par.name == "linear":
        return rng.normal(0, 3, par.dim_per_curve)
    th = rng.random(par.dim_per_curve)
    if faces:  # put some coordinates exactly on the box faces
        pick = rng.random(par.dim_per_curve) < 0.5
        th[pick] = np.round(th[pick])
    return th


# 2000 seeded thetas per parameterization: the first 200 in the fast lane, the other 1800
# (about 10x the time) with the slow tests; together the same 2000 as always
@pytest.mark.parametrize("part", [
    pytest.param(slice(0, 200), id="first200"),
    pytest.param(slice(200, 2000), id="other1800", marks=pytest.mark.slow),
])
@pytest.mark.parametrize("name", NAMES)
def test_endpoints_and_monotone_for_many_thetas(name, part):
    par = get_parameterization(name)
    rng = np.random.default_rng(1)
    x = torch.linspace(0, 1, 4001)
    thetas = [_random_theta(par, rng, faces=i % 2 == 0) for i in range(2000)]
    for th in thetas[part]:
        h = par.curve(th, x)
        assert torch.isfinite(h).all()
        assert h[0].item() == 0.0 and abs(h[-1].item() - 1.0) < 1e-6
        assert (h[1:] - h[:-1]).min().item() >= -1e-6
        assert h.min() >= -1e-6 and h.max() <= 1 + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_identity_theta_is_identity(name):
    par = get_parameterization(name)
    x = torch.rand(10000, dtype=torch.float64)
    torch.testing.assert_close(par.curve(par.identity_theta, x), x, atol=1e-12, rtol=0)


def test_identity_theta_values():
    np.testing.assert_allclose(get_parameterization("bezier").identity_theta,
                               [0.25, 0.25, 1 / 3, 1 / 3, 0.5, 0.5])
    np.testing.assert_allclose(get_parameterization("bezier1").identity_theta, [0.5, 0.5])
    np.testing.assert_allclose(get_parameterization("linear").identity_theta, np.zeros(5))


def _reference_bezier(points_x, points_y, x, samples=200001):
    """Independent: sample each quadratic segment densely in t, then np.interp."""
    xs, ys = [], []
    t = np.linspace(0, 1, samples)
    for k in range(0, len(points_x) - 1, 2):
        px, py = points_x[k:k + 3], points_y[k:k + 3]
        xs.append((1 - t) ** 2 * px[0] + 2 * (1 - t) * t * px[1] + t ** 2 * px[2])
        ys.append((1 - t) ** 2 * py[0] + 2 * (1 - t) * t * py[1] + t ** 2 * py[2])
    return np.interp(x, np.concatenate(xs), np.concatenate(ys))


@pytest.mark.parametrize("name", ["bezier", "bezier1"])
def test_bezier_matches_dense_sampling(name):
    par = get_parameterization(name)
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 997)
    for _ in range(40):
        th = rng.uniform(0.05, 0.95, par.dim_per_curve)
        # control points from theta by the definition cp_k = cp_{k-1} + th_k (1 - cp_{k-1})
        px, py = [0.0], [0.0]
        cx = cy = 0.0
        for j in range(par.dim_per_curve // 2):
            cx = cx + th[2 * j] * (1 - cx)
            cy = cy + th[2 * j + 1] * (1 - cy)
            px.append(cx)
            py.append(cy)
        px.append(1.0)
        py.append(1.0)
        ref = _reference_bezier(np.array(px), np.array(py), x)
        got = par.curve(th, torch.tensor(x)).numpy()
        np.testing.assert_allclose(got, ref, atol=2e-4)


def test_linear_matches_interp():
    par = get_parameterization("linear")
    th = np.array([0.3, -1.0, 2.0, 0.0, 0.5])
    inc = np.exp(th) / np.exp(th).sum()
    knots_y = np.concatenate([[0], np.cumsum(inc)])
    x = np.linspace(0, 1, 1001)
    ref = np.interp(x, np.linspace(0, 1, 6), knots_y)
    np.testing.assert_allclose(par.curve(th, torch.tensor(x)).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("name", ["bezier", "bezier1", "linear"])
def test_gradients_finite_on_faces_and_match_derivative(name):
    par = get_parameterization(name)
    rng = np.random.default_rng(3)
    x = torch.cat([torch.tensor([0.0, 1e-30, 1e-7, 0.5, 1 - 1e-7, 1.0], dtype=torch.float64),
                   torch.rand(200, dtype=torch.float64)])
    for _ in range(300):
        th = _random_theta(par, rng, faces=True)
        xx = x.clone().requires_grad_(True)
        tt = torch.tensor(th, requires_grad=True)
        h = par.curve(tt, xx)
        h.sum().backward()
        assert torch.isfinite(xx.grad).all() and torch.isfinite(tt.grad).all()
        torch.testing.assert_close(par.curve_derivative(th, x.detach()), xx.grad)


def test_derivative_matches_finite_differences():
    par = get_parameterization("bezier")
    rng = np.random.default_rng(4)
    x = torch.linspace(0.01, 0.99, 999, dtype=torch.float64)
    for _ in range(50):
        th = rng.uniform(0.05, 0.95, 6)
        d = par.curve_derivative(th, x)
        fd = (par.curve(th, x + 1e-7) - par.curve(th, x - 1e-7)) / 2e-7
        ok = (d - fd).abs() <= 1e-4 * (1 + d.abs())
        assert ok.float().mean() > 0.99  # a few points straddle a segment junction


@pytest.mark.parametrize("name", ["bezier", "bezier1", "linear"])
def test_workspace_path_equals_autograd_path(name):
    par = get_parameterization(name)
    rng = np.random.default_rng(5)
    x = torch.rand(5000)
    ws = Workspace(5000, torch.float32, "cpu")
    for _ in range(50):
        table = par.table(torch.tensor(_random_theta(par, rng, faces=True))).to("cpu",
                                                                                 torch.float32)
        h, d = evaluate_table(table, x, derivative=True)
        h2, d2 = torch.empty_like(x), torch.empty_like(x)
        evaluate_table_into(table, x, h2, d2, ws)
        torch.testing.assert_close(h2, h)
        torch.testing.assert_close(d2, d)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown parameterization"):
        get_parameterization("spline")
    with pytest.raises(ValueError, match="6 parameters"):
        get_parameterization("bezier").curve([0.5] * 5, torch.rand(3))
    with pytest.raises(TypeError):
        get_parameterization("bezier").curve(None, torch.arange(3))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trip(name):
    parameterization, theta = preset_theta(name)
    par = get_parameterization(parameterization)
    assert parameterization == ("bezier1" if name == "bf1" else "bezier")
    assert np.all(theta >= 0) and np.all(theta <= 1)
    d = par.dim_per_curve
    for k, (_curve, pts) in enumerate(PRESETS[name].items()):
        th = theta[k * d:(k + 1) * d]
        xs, ys = par.control_points(torch.tensor(th))
        np.testing.assert_allclose(xs[1:-1].numpy(), pts[0::2], atol=1e-12)
        np.testing.assert_allclose(ys[1:-1].numpy(), pts[1::2], atol=1e-12)
        np.testing.assert_allclose(control_points_to_theta(pts, parameterization), th)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        preset_theta("dice")
    with pytest.raises(ValueError):
        control_points_to_theta([0.1, 0.2, 0.3], "bezier")
