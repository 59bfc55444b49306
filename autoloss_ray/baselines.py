"""Compatibility module: the baseline losses live in :mod:`autoloss_ray.losses.baselines`.

Kept so that users' code importing ``autoloss_ray.baselines`` keeps working; it only
re-exports that module's public names.
"""

from __future__ import annotations

from autoloss_ray.losses.baselines import *  # noqa: F401,F403
from autoloss_ray.losses.baselines import __all__  # noqa: F401
