"""Compatibility module: PPO2, random search and the truncated normal now live in
:mod:`autoloss_ray.search` (``search.ppo``, ``search.random_search``, ``search.truncnorm``).

Kept so that ``from autoloss_ray.ppo import PPO2`` (other projects, older scripts) works;
new code imports from :mod:`autoloss_ray.search`.
"""

from __future__ import annotations

from autoloss_ray.search._ask_tell import STATE_FORMAT as _STATE_FORMAT
from autoloss_ray.search._ask_tell import check_samples_per_step
from autoloss_ray.search.ppo import PPO2, PPOUpdate, ppo_update
from autoloss_ray.search.random_search import RandomSearch
from autoloss_ray.search.truncnorm import TruncatedNormal

__all__ = ["TruncatedNormal", "PPO2", "RandomSearch", "PPOUpdate", "ppo_update",
           "check_samples_per_step", "_STATE_FORMAT"]
