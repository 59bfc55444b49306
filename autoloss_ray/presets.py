"""The paper's searched surrogate parameters (DESIGN section 7) and their conversion to theta.

:data:`PRESETS` holds the released *control points* per curve ((0, 0) and (1, 1) implied),
laid out ``(x1, y1, x2, y2, x3, y3)`` for the 2-segment Bezier curves and ``(x1, y1)`` for the
1-segment curves of BF1. The search parameters theta are *increments* (see
:mod:`autoloss_ray.parameterizations`); :func:`preset_theta` converts the control points back
to theta (the inverse of the increment map), so a preset can seed a search or build a loss.
"""

from __future__ import annotations

import numpy as np

from autoloss_ray.parameterizations import get_parameterization

__all__ = ["PRESETS", "PRESET_PARAMETERIZATION", "preset_theta", "control_points_to_theta"]

_MACC = (0.021454, 0.73906, 0.41163, 0.79866, 0.91986, 0.95041)

PRESETS: dict[str, dict[str, tuple[float, ...]]] = {
    "miou": {
        "and": (5.697e-4, 0.64372, 0.33859, 0.70554, 0.62528, 0.77955),
        "or": (0.69038, 0.013063, 0.83417, 0.96243, 0.94300, 0.98004),
    },
    "biou": {
        "and": (3.654e-4, 0.98417, 0.96949, 0.99234, 0.98833, 0.99555),
        "or": (0.35461, 0.26722, 0.56055, 0.43529, 0.56543, 0.60145),
    },
    "fwiou": {
        "and": (0.11908, 0.66995, 0.19316, 0.71179, 0.46337, 0.79494),
        "or": (0.52665, 0.29870, 0.70665, 0.44857, 0.86858, 0.72617),
    },
    "macc": {"and": _MACC},
    "gacc": {"and": _MACC},
    "bf1": {
        "h1": (0.81130, 0.85262),
        "h2": (0.17165, 0.031648),
        "h3": (0.20997, 0.44903),
        "h4": (0.078475, 0.87530),
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

    theta is laid out as :func:`autoloss_ray.surrogates.search_space` expects (curves in
    ``CURVES[name]`` order).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    from autoloss_ray.surrogates import CURVES

    parameterization = PRESET_PARAMETERIZATION[name]
    theta = np.concatenate([
        control_points_to_theta(PRESETS[name][curve], parameterization) for curve in CURVES[name]
    ])
    return parameterization, theta
