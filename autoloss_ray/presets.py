"""Deprecated: the paper's searched losses live in :mod:`autoloss_ray.losses.presets`.

Importing this module warns (``DeprecationWarning``); it goes away in the next release. Import
from :mod:`autoloss_ray.losses.presets` instead. This module only re-exports its names.
"""

from __future__ import annotations

import warnings

from autoloss_ray.losses.presets import (
    PRESET_PARAMETERIZATION,
    PRESETS,
    control_points_to_theta,
    preset_theta,
)

__all__ = ["PRESETS", "PRESET_PARAMETERIZATION", "preset_theta", "control_points_to_theta"]

warnings.warn("autoloss_ray.presets is deprecated and will be removed in the next release; "
              "import from autoloss_ray.losses.presets instead", DeprecationWarning, stacklevel=2)
