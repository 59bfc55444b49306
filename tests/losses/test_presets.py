"""Presets: the stored control points are DESIGN section 7's numbers, bit for bit.

The reference is ``../shared/DESIGN.md`` (the contract) when the checkout has it, else the
literal copy of section 7 below (which is itself checked against DESIGN.md when both exist).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from autoloss_ray import SurrogateLoss
from autoloss_ray.losses.parameterizations import evaluate_table, get_parameterization
from autoloss_ray.losses.presets import PRESETS, control_points_to_theta, preset_theta
from autoloss_ray.losses.space import CURVES
from tests import REPO

# DESIGN section 7, copied verbatim (the preset lines only).
SECTION7 = """
- miou: and (5.69728440e-04, 6.43720450e-01, 3.38589169e-01, 7.05543360e-01, 6.25281252e-01,
  7.79551927e-01); or (6.90375570e-01, 1.30628900e-02, 8.34170515e-01, 9.62431815e-01,
  9.42998269e-01, 9.80038125e-01)
- biou: and (3.65390355e-04, 9.84171689e-01, 9.69491959e-01, 9.92340326e-01, 9.88328516e-01,
  9.95552719e-01); or (3.54609758e-01, 2.67221928e-01, 5.60551465e-01, 4.35290039e-01,
  5.65432191e-01, 6.01448298e-01)
- fwiou (log): and (0.11907931, 0.669945, 0.19315827, 0.71179134, 0.46337387, 0.79494196);
  or (0.5266451, 0.29869753, 0.706645, 0.4485701, 0.86858255, 0.7261703)
- macc and gacc: (2.1453928e-02, 7.3905742e-01, 4.1163361e-01, 7.9865617e-01, 9.1986191e-01,
  9.5041156e-01)
- bf1 (one segment each, x1, y1): h1 (0.8113003373146057, 0.8526162505149841),
  h2 (0.17164576053619385, 0.03164796531200409), h3 (0.20997394621372223, 0.44903290271759033),
  h4 (0.07847517728805542, 0.8753038048744202)
"""

DESIGN = REPO.parent / "shared" / "DESIGN.md"

# 1 - prod(1 - theta) (the increment map) is computed next to 1, where a float64 ulp is 2^-52:
# a control point comes back with an *absolute* error of a few 2^-53, whatever its size (the
# relative error of a tiny x1 such as 3.65e-4 is larger). Measured: at most 2^-53 (1.1e-16).
ROUND_TRIP_ATOL = 2.0**-52


def parse_presets(text: str) -> dict[str, dict[str, tuple[float, ...]]]:
    """The preset bullets of DESIGN section 7 -> {metric: {curve: control points}}."""
    out: dict[str, dict[str, tuple[float, ...]]] = {}
    bullets = re.split(r"\n- ", "\n" + text.strip())
    for bullet in bullets:
        bullet = " ".join(bullet.split())
        if ":" not in bullet:
            continue
        head, body = bullet.split(":", 1)
        names = re.findall(r"\b(miou|biou|fwiou|macc|gacc|bf1)\b", head)
        if not names or not re.search(r"\(\s*[0-9]", body):
            continue
        curves = {}
        for label, nums in re.findall(r"(?:\b(and|or|h\d)\s*)?\(([^)]*)\)", body):
            curves[label or "and"] = tuple(float(v) for v in nums.split(","))
        for name in names:
            out[name] = curves
    return out


def design_presets() -> dict[str, dict[str, tuple[float, ...]]]:
    if not DESIGN.exists():
        return parse_presets(SECTION7)
    text = DESIGN.read_text()
    start = text.index("## 7.")
    end = text.index("Conventions where", start)
    return parse_presets(text[start:end])


def test_literal_copy_matches_design():
    if not DESIGN.exists():
        pytest.skip(f"{DESIGN} is not in this checkout; the literal copy is the reference")
    assert parse_presets(SECTION7) == design_presets()


def test_presets_equal_design_exactly():
    ref = design_presets()
    assert set(ref) == set(PRESETS) == set(CURVES)
    for name, curves in ref.items():
        assert set(curves) == set(CURVES[name]), name
        for curve, points in curves.items():
            # exact float64 equality: the same decimal strings, parsed the same way
            assert PRESETS[name][curve] == points, (name, curve)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_theta_round_trips_to_design(name):
    ref = design_presets()[name]
    parameterization, theta = preset_theta(name)
    par = get_parameterization(parameterization)
    d = par.dim_per_curve
    for k, curve in enumerate(CURVES[name]):
        th = torch.tensor(theta[k * d:(k + 1) * d], dtype=torch.float64)
        xs, ys = par.control_points(th)
        got = np.stack([xs[1:-1].numpy(), ys[1:-1].numpy()], axis=1).reshape(-1)
        want = np.asarray(ref[curve], dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=0, atol=ROUND_TRIP_ATOL)
        np.testing.assert_array_equal(control_points_to_theta(ref[curve], parameterization),
                                      theta[k * d:(k + 1) * d])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_from_preset_curves_pass_through_the_control_points(name):
    """The on-curve control points: (0, 0), (1, 1) and the segment junction (x2, y2)."""
    ref = design_presets()[name]
    loss = SurrogateLoss.from_preset(name, num_classes=3)
    tables = loss.curve_tables()
    for curve in CURVES[name]:
        table = tables[(name, curve)]
        pts = ref[curve]
        xs = [0.0, 1.0]
        ys = [0.0, 1.0]
        if len(pts) == 6:  # two segments: the junction P2 is on the curve and a table bound
            xs.append(pts[2])
            ys.append(pts[3])
            assert abs(float(table.bounds[1]) - pts[2]) <= ROUND_TRIP_ATOL
        h = evaluate_table(table, torch.tensor(xs, dtype=torch.float64))
        np.testing.assert_allclose(h.numpy(), ys, rtol=0, atol=1e-14)
        # just past the junction the second segment's slope holds (no rounded junction left)
        if len(pts) == 6:
            x = torch.tensor([pts[2] - 1e-9, pts[2] + 1e-9], dtype=torch.float64)
            _, dh = evaluate_table(table, x, derivative=True)
            # slope of segment 1 at its end: (y2 - y1) / (x2 - x1); of segment 2 at its start:
            # (y3 - y2) / (x3 - x2)
            s1 = (pts[3] - pts[1]) / (pts[2] - pts[0])
            s2 = (pts[5] - pts[3]) / (pts[4] - pts[2])
            np.testing.assert_allclose(dh.numpy(), [s1, s2], rtol=1e-5)
