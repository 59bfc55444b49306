"""PPO2's settings, defined once: :class:`PPO2Config` (numpy only; no scipy, no ray).

:class:`~autoloss_ray.search.ppo.PPO2`, :class:`searchers.PPO2Searcher`, the application's
``SearchOptions`` and the ``autoloss search`` CLI all take their PPO2 settings, defaults and
choices from here; the fields' ``help`` metadata is the CLI's help text (``%(default)s``
in it stands for the default, as in argparse). The search's size and scale defaults are here
too: :data:`DEFAULT_STEPS` (T), :data:`DEFAULT_SAMPLES_PER_STEP` (M) and
:data:`DEFAULT_SIGMA`, the defaults of ``PPO2``, ``RandomSearch`` and the step searchers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PPO2Config", "STARTUPS", "ADVANTAGES", "BASELINES", "DEFAULT_STEPS",
           "DEFAULT_SAMPLES_PER_STEP", "DEFAULT_SIGMA"]

# The paper's search, the library's defaults: T steps (the step searchers' ``steps``) of M
# samples each (``samples_per_step`` of PPO2, RandomSearch and the step searchers), drawn at
# the policy scale sigma (PPO2Config.sigma; random search's, TPE's and CMA-ES's ``sigma``)
DEFAULT_STEPS = 12
DEFAULT_SAMPLES_PER_STEP = 32
DEFAULT_SIGMA = 0.2

# PPO2's options beyond the paper's defaults (the first of each is the default)
STARTUPS = ("policy", "uniform")
ADVANTAGES = ("baseline", "rank")
# the advantage baseline: the step's mean reward, or sample 0's (mu itself; needs include_mean)
BASELINES = ("mean", "mu")
# what a real-valued setting may be
_NUMBER = (int, float, np.floating)


@dataclass(frozen=True, kw_only=True)
class PPO2Config:
    """The settings of :class:`~autoloss_ray.search.ppo.PPO2` (defaults: the paper's).

    Every field is also a keyword argument of ``PPO2`` and ``PPO2Searcher``:
    ``PPO2Searcher(sigma=0.3)`` is ``PPO2Searcher(config=PPO2Config(sigma=0.3))``. Values
    are checked when built (a ``ValueError`` names the setting); ``PPO2`` says what each
    setting does.

    Attributes:
        sigma: policy scale > 0 (relative to the box width for bounded dimensions).
        clip_eps: PPO clip epsilon in (0, 1).
        lr: Adam learning rate on the mean's parameters (> 0).
        update_steps: Adam steps per update (>= 1).
        baseline: "mean" or "mu" (needs include_mean).
        include_mean: sample 0 of every step is mu itself.
        sigma_decay: the scale of step t is max(sigma * sigma_decay**t, sigma_min); in
            (0, 1], 1.0 (a fixed scale) is the paper's.
        sigma_min: the floor of that schedule (>= 0).
        startup: "policy" (the paper's) or "uniform".
        advantages: "baseline" (the paper's) or "rank".
        mirrored: antithetic draws.
    """

    sigma: float = field(default=DEFAULT_SIGMA,
                         metadata={"help": "sampling std (default %(default)s)"})
    clip_eps: float = field(default=0.2, metadata={"help": None})
    lr: float = field(default=0.2, metadata={"help": "Adam learning rate on mu"})
    update_steps: int = field(default=60, metadata={"help": None})
    baseline: str = field(default="mean", metadata={
        "choices": BASELINES,
        "help": "PPO2's advantage baseline: 'mean' (A_i = R_i - mean R, default) or 'mu' (the "
                "official code's: sample 0 of every step is mu itself, trained like its "
                "siblings, and A_i = R_i - R_0)"})
    include_mean: bool = False
    sigma_decay: float = 1.0
    sigma_min: float = 0.0
    startup: str = field(default="policy", metadata={
        "choices": STARTUPS,
        "help": "PPO2's step 0: 'policy' (drawn around the initial mu, the paper's; default) "
                "or 'uniform' (drawn uniformly in the box, no update: mu_1 is its best trial)"})
    advantages: str = field(default="baseline", metadata={
        "choices": ADVANTAGES,
        "help": "PPO2's advantages: 'baseline' (R_i - the --baseline, the paper's; default) "
                "or 'rank' (centred ranks of the step's rewards: a failed trial's 0.0 weighs "
                "no more than the worst valid reward)"})
    mirrored: bool = field(default=False, metadata={
        "help": "PPO2 draws each step's samples in mirrored pairs (+z and -z standard-normal "
                "noise through the truncation; default: --no-mirrored)"})

    def __post_init__(self) -> None:
        # the checks (and their order) PPO2's constructor made before the config existed
        if self.startup not in STARTUPS:
            raise ValueError(f"startup must be one of {STARTUPS}; got {self.startup!r}")
        if self.advantages not in ADVANTAGES:
            raise ValueError(f"advantages must be one of {ADVANTAGES}; got {self.advantages!r}")
        if not isinstance(self.mirrored, (bool, np.bool_)):
            raise ValueError(f"mirrored must be True or False; got {self.mirrored!r}")
        decay, smin, sigma = self.sigma_decay, self.sigma_min, self.sigma
        if not (isinstance(decay, _NUMBER) and 0 < decay <= 1):
            raise ValueError(f"sigma_decay must be a number in (0, 1]; got {decay!r}")
        if not (isinstance(smin, _NUMBER) and 0 <= smin < math.inf):
            raise ValueError(f"sigma_min must be a finite number >= 0; got {smin!r}")
        if not (isinstance(sigma, _NUMBER) and math.isfinite(sigma)) or sigma <= 0:
            raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
        if not (0 < float(self.clip_eps) < 1):
            raise ValueError(f"clip_eps must be in (0, 1); got {self.clip_eps!r}")
        if not (math.isfinite(float(self.lr)) and self.lr > 0):
            raise ValueError(f"lr must be > 0; got {self.lr!r}")
        steps = self.update_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"update_steps must be an int >= 1; got {steps!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be 'mean' or 'mu'; got {self.baseline!r}")
        if self.baseline == "mu" and not self.include_mean:
            raise ValueError("baseline='mu' needs include_mean=True (sample 0 is mu itself)")

    @classmethod
    def of(cls, config: PPO2Config | None = None, **settings: Any) -> PPO2Config:
        """``config`` (default: the defaults) with the keyword ``settings`` replaced; an
        unknown setting is a TypeError naming it."""
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unexpected PPO2 setting(s) {unknown}; the settings are the "
                            f"fields of PPO2Config: {[f.name for f in dataclasses.fields(cls)]}")
        if config is None:
            return cls(**settings)
        if not isinstance(config, cls):
            raise TypeError(f"config must be a PPO2Config, got {type(config).__name__}")
        return dataclasses.replace(config, **settings) if settings else config

    def as_dict(self) -> dict[str, Any]:
        """The settings as keyword arguments (field order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

