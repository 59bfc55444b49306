"""Compatibility module: the paper's searched losses live in :mod:`autoloss_ray.losses.presets`.

Kept so that users' code importing ``autoloss_ray.presets`` keeps working; it only re-exports.
"""

from __future__ import annotations

from autoloss_ray.losses.presets import (
    PRESET_PARAMETERIZATION,
    PRESETS,
    control_points_to_theta,
    preset_theta,
)

__all__ = ["PRESETS", "PRESET_PARAMETERIZATION", "preset_theta", "control_points_to_theta"]
