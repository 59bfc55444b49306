"""The search algorithms and the step protocol, pure (numpy/scipy; never ray).

- :mod:`.truncnorm`: :class:`TruncatedNormal` (the policy's distribution) and its log-mass
  helpers;
- :mod:`.ppo`: :class:`PPO2` (ask/tell: settings, sampling, history, state);
- :mod:`.ppo_math`: :func:`ppo_update` (the paper's update, with CleanRL's diagnostics) and
  the centred ranks;
- :mod:`.config`: :class:`PPO2Config`, PPO2's settings (what ``PPO2``, the Tune searcher,
  the application's options and the CLI share);
- :mod:`.random_search`: :class:`RandomSearch` (the paper's Fig. 3 baseline);
- :mod:`.step_protocol`: :class:`StepProtocol`, steps of M samples handed out, collected and
  told, failure rewards, the step (policy) record and the protocol's saved state;
- :mod:`.multifidelity`: :func:`stopped_below`, where a sample a scheduler stopped is told;
- :mod:`.replay`: the replay-based resume (recorded results checked and told again);
- private: :mod:`._ask_tell` (what PPO2 and random search share, the state format),
  :mod:`._mean_param` (mu <-> unconstrained parameters).

Ray Tune adapters over these live in ``searchers``. Names here load lazily.
"""

from __future__ import annotations

from autoloss_ray._lazy import lazy_getattr

_EXPORTS = {
    "TruncatedNormal": "autoloss_ray.search.truncnorm",
    "PPO2": "autoloss_ray.search.ppo",
    "PPO2Config": "autoloss_ray.search.config",
    "PPOUpdate": "autoloss_ray.search.ppo_math",
    "ppo_update": "autoloss_ray.search.ppo_math",
    "RandomSearch": "autoloss_ray.search.random_search",
    "StepProtocol": "autoloss_ray.search.step_protocol",
    "STEP_KEY": "autoloss_ray.search.step_protocol",
    "SAMPLE_KEY": "autoloss_ray.search.step_protocol",
    "check_samples_per_step": "autoloss_ray.search._ask_tell",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
