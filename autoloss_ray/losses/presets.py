"""The paper's searched surrogate parameters and their conversion to theta (the table:
docs/paper.md#the-papers-released-curves-presets).

:data:`PRESETS` holds the released *control points* per curve ((0, 0) and (1, 1) implied),
laid out ``(x1, y1, x2, y2, x3, y3)`` for the 2-segment Bezier curves and ``(x1, y1)`` for the
1-segment curves of BF1. The search parameters theta are *increments* (see
:mod:`autoloss_ray.losses.parameterizations`); :func:`preset_theta` converts the control points
back to theta (the inverse of the increment map), so a preset can seed a search or build a loss.
"""

from __future__ import annotations

import numpy as np

from autoloss_ray.losses.parameterizations import get_parameterization
from autoloss_ray.losses.space import CURVES

__all__ = ["PRESETS", "PRESET_PARAMETERIZATION", "preset_theta", "control_points_to_theta"]

_MACC = (2.1453928e-02, 7.3905742e-01, 4.1163361e-01, 7.9865617e-01, 9.1986191e-01,
         9.5041156e-01)

# Full precision, exactly as released (docs/paper.md#the-papers-released-curves-presets):
# rounding would move a Bezier segment junction, and a probability between the old and the
# new junction would get the other segment's slope. Sources: the retrain configs of the
# official release (ASL_configs/retrain/<metric>_bezier_10k.py), except FWIoU, whose released
# config repeats the BIoU theta: its preset is the theta printed in that run's training log
# (fwiou_bezier_10k.log), which produced the reported FWIoU.
PRESETS: dict[str, dict[str, tuple[float, ...]]] = {
    "miou": {
        "and": (5.69728440e-04, 6.43720450e-01, 3.38589169e-01, 7.05543360e-01,
                6.25281252e-01, 7.79551927e-01),
        "or": (6.90375570e-01, 1.30628900e-02, 8.34170515e-01, 9.62431815e-01,
               9.42998269e-01, 9.80038125e-01),
    },
    "biou": {
        "and": (3.65390355e-04, 9.84171689e-01, 9.69491959e-01, 9.92340326e-01,
                9.88328516e-01, 9.95552719e-01),
        "or": (3.54609758e-01, 2.67221928e-01, 5.60551465e-01, 4.35290039e-01,
               5.65432191e-01, 6.01448298e-01),
    },
    "fwiou": {  # the training log's theta (see above)
        "and": (0.11907931, 0.669945, 0.19315827, 0.71179134, 0.46337387, 0.79494196),
        "or": (0.5266451, 0.29869753, 0.706645, 0.4485701, 0.86858255, 0.7261703),
    },
    "macc": {"and": _MACC},
    "gacc": {"and": _MACC},
    "bf1": {
        "h1": (0.8113003373146057, 0.8526162505149841),
        "h2": (0.17164576053619385, 0.03164796531200409),
        "h3": (0.20997394621372223, 0.44903290271759033),
        "h4": (0.07847517728805542, 0.8753038048744202),
    },
}

PRESET_PARAMETERIZATION: dict[str, str] = {
    name: ("bezier1" if name == "bf1" else "bezier") for name in PRESETS
}


def control_points_to_theta(points, parameterization: str = "bezier") -> np.ndarray:
    """Interior control points (x1, y1, x2, y2, ...) of one curve -> its theta increments."""
    par = get_parameterization(parameterization)
    pts = np.asarray(points, dtype=np.float64).reshape(-1)
    if pts.shape != (par.dim_per_curve,):
        raise ValueError(f"a {parameterization!r} curve has {par.dim_per_curve // 2} interior "
                         f"control points ({par.dim_per_curve} numbers), got {pts.size}")
    return par.to_theta(pts[0::2], pts[1::2])


def preset_theta(name: str) -> tuple[str, np.ndarray]:
    """(parameterization, theta) of the paper's searched loss for metric ``name``.

    theta is laid out as :func:`autoloss_ray.losses.search_space` expects (curves in
    ``CURVES[name]`` order).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    parameterization = PRESET_PARAMETERIZATION[name]
    theta = np.concatenate([
        control_points_to_theta(PRESETS[name][curve], parameterization) for curve in CURVES[name]
    ])
    return parameterization, theta
