"""Deprecated: the step protocol lives in :mod:`autoloss_ray.search.step_protocol`.

Importing this module warns (``DeprecationWarning``); it goes away in the next release. It only
re-exports, so searchers pickled before the rename (their ``StepProtocol``) still load.
"""

from __future__ import annotations

import warnings

from autoloss_ray.search.step_protocol import *  # noqa: F401,F403
from autoloss_ray.search.step_protocol import __all__  # noqa: F401

warnings.warn("autoloss_ray.search.steps is deprecated and will be removed in the next release; "
              "import from autoloss_ray.search.step_protocol (or autoloss_ray.search) instead",
              DeprecationWarning, stacklevel=2)
