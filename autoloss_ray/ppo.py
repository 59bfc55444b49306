"""Deprecated: PPO2, random search and the truncated normal live in :mod:`autoloss_ray.search`.

Importing this module warns (``DeprecationWarning``); it goes away in the next release. Import
``PPO2``, ``PPOUpdate``, ``ppo_update``, ``RandomSearch``, ``TruncatedNormal`` and
``check_samples_per_step`` from :mod:`autoloss_ray.search` instead. This module only re-exports.
"""

from __future__ import annotations

import warnings

from autoloss_ray.search._ask_tell import STATE_FORMAT as _STATE_FORMAT
from autoloss_ray.search._ask_tell import check_samples_per_step
from autoloss_ray.search.ppo import PPO2, PPOUpdate, ppo_update
from autoloss_ray.search.random_search import RandomSearch
from autoloss_ray.search.truncnorm import TruncatedNormal

__all__ = ["TruncatedNormal", "PPO2", "RandomSearch", "PPOUpdate", "ppo_update",
           "check_samples_per_step", "_STATE_FORMAT"]

warnings.warn("autoloss_ray.ppo is deprecated and will be removed in the next release; "
              "import from autoloss_ray.search instead", DeprecationWarning, stacklevel=2)
