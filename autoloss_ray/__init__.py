"""autoloss-ray: Auto Seg-Loss (Li et al., ICLR 2021) as a distributed search service on Ray.

The library itself never imports ``ray``; ``searchers`` and ``trainables`` adapt it to Ray Tune.
Public names are loaded lazily so that importing one part never pulls in the others.
"""

from __future__ import annotations

from autoloss_ray._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate": "autoloss_ray.metrics",
    "MetricAccumulator": "autoloss_ray.metrics",
    "METRICS": "autoloss_ray.metrics",
    "SurrogateLoss": "autoloss_ray.losses.surrogate",
    "SearchSpace": "autoloss_ray.losses.space",
    "search_space": "autoloss_ray.losses.space",
    "PPO2": "autoloss_ray.search.ppo",
    "TruncatedNormal": "autoloss_ray.search.truncnorm",
    "RandomSearch": "autoloss_ray.search.random_search",
    "run_trial": "autoloss_ray.train",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
