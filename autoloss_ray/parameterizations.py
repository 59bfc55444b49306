"""Deprecated: the curve parameterizations live in :mod:`autoloss_ray.losses.parameterizations`.

Importing this module warns (``DeprecationWarning``); it goes away in the next release. Import
from :mod:`autoloss_ray.losses.parameterizations` instead. This module only re-exports its
public names.
"""

from __future__ import annotations

import warnings

from autoloss_ray.losses.parameterizations import *  # noqa: F401,F403
from autoloss_ray.losses.parameterizations import __all__  # noqa: F401

warnings.warn("autoloss_ray.parameterizations is deprecated and will be removed in the next "
              "release; import from autoloss_ray.losses.parameterizations instead",
              DeprecationWarning, stacklevel=2)
