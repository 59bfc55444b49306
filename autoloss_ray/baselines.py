"""Deprecated: the baseline losses live in :mod:`autoloss_ray.losses.baselines`.

Importing this module warns (``DeprecationWarning``); it goes away in the next release. Import
from :mod:`autoloss_ray.losses.baselines` instead. This module only re-exports its public names.
"""

from __future__ import annotations

import warnings

from autoloss_ray.losses.baselines import *  # noqa: F401,F403
from autoloss_ray.losses.baselines import __all__  # noqa: F401

warnings.warn("autoloss_ray.baselines is deprecated and will be removed in the next release; "
              "import from autoloss_ray.losses.baselines instead", DeprecationWarning,
              stacklevel=2)
