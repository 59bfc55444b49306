"""Ray Tune searchers over :mod:`autoloss_ray.search`: PPO2 (the paper's search) and random search.

``PPO2Searcher`` and ``RandomSearcher`` subclass ``ray.tune.search.Searcher`` and work with
``tune.Tuner`` and ``tune.run`` for any trainable and any box-shaped space (see
``searchers.ppo2`` for failures and restore; the step protocol itself is the library's
``autoloss_ray.search.step_protocol``, ``searchers.step_searcher`` translates it for Tune).
``TPESearcher`` and ``CMAESSearcher`` (``searchers.optuna_search``) run optuna's samplers
through Ray Tune's ``OptunaSearch`` in the same steps.
"""

from searchers.optuna_search import CMAESSearcher, TPESearcher
from searchers.ppo2 import SAMPLE_KEY, STEP_KEY, PPO2Searcher, RandomSearcher
from searchers.space import Box, BoxSpace

__all__ = [
    "PPO2Searcher", "RandomSearcher", "TPESearcher", "CMAESSearcher", "Box", "BoxSpace",
    "STEP_KEY", "SAMPLE_KEY",
]
