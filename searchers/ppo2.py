"""Ray Tune ``Searcher`` adapters over :mod:`autoloss_ray.search` (PPO2 and random search).

Both searchers work step by step (the protocol is the library's
:class:`autoloss_ray.search.step_protocol.StepProtocol`, the Tune translation
:class:`searchers.step_searcher.StepSearcher`): a step's ``M`` configs are handed out by
``suggest`` (each with ``"search_step"`` and ``"search_sample"`` keys), ``suggest`` returns
``None`` while the step waits for its results, the optimizer is told once all ``M`` results
are in, and
``Searcher.FINISHED`` is returned after ``steps`` steps. Use them with ``num_samples=-1`` (or
at least ``steps * samples_per_step``)::

    searcher = PPO2Searcher(search_space("miou"), metric="reward", mode="max",
                            steps=12, samples_per_step=32)
    tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1,
               max_concurrent_trials=32), param_space={...constants...}).fit()

Concurrency: ``set_max_concurrency`` returns True (as Ray's HEBO searcher does), so Tune's
``max_concurrent_trials``/``ConcurrencyLimiter`` (``batch=True`` or not) hand every call
through and the searcher itself never has more than that many trials in flight. ``batch``
changes nothing that is learned: the optimizer is told only when a whole step is in.

Every ending of a trial completes its sample, so a step cannot stall (see
``on_trial_complete``). Failures: a trial that errors, ends without the metric (a warning is
logged once), or reports a NaN/inf metric gets ``failure_reward`` (in the metric's units;
default ``None`` = the worst valid value seen so far in the search for the mode, i.e. the
lowest in max mode and the highest in min mode, the step's own values included) and is
recorded as failed, with the reason, in the step record (``failed``, ``fail_reasons``).

Early stopping (ASHA, HyperBand, stoppers): a trial a scheduler stops counts with the last
value it reported (what Ray's own searchers use), and ``stopped_early`` is recorded.

Restore (``Tuner.restore``): the whole state (optimizer, the step's samples, which sample each
trial id carries, which results were already told) is pickled at every experiment checkpoint.
Tune re-runs trials that were in flight at the checkpoint under their old trial ids, so their
results reach the right samples; samples that were handed out after the checkpoint are
handed out again with the same theta and sample index; a result that was already told is
never told twice (repeats are ignored). If Tune is told *not* to resume unfinished trials
(``resume_unfinished=False``), call :meth:`requeue_in_flight` on the searcher before ``fit``
so that those samples are handed out again.

Replay (what ``autoloss search --resume`` uses): :meth:`replay` fast-forwards a fresh
searcher through recorded results (the Parquet store's rows), re-drawing every step with the
same seed and checking each recorded config against its draw. It needs no Tune state at all,
so it is exact even when Tune's experiment checkpoint lags the store after a hard kill.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autoloss_ray.search.config import DEFAULT_SIGMA, PPO2Config
from autoloss_ray.search.ppo import PPO2
from autoloss_ray.search.random_search import RandomSearch
from autoloss_ray.search.step_protocol import SAMPLE_KEY, STEP_KEY
from searchers.space import BoxSpace
from searchers.step_searcher import _STATE_VERSION, StepSearcher  # noqa: F401  (state format 1)
from searchers.step_settings import STEP_SETTINGS, StepSettings, with_step_keywords

__all__ = ["PPO2Searcher", "RandomSearcher", "STEP_KEY", "SAMPLE_KEY"]

_StepSearcher = StepSearcher  # its name before the protocol moved into autoloss_ray.search


class PPO2Searcher(StepSearcher):
    """Ray Tune searcher running PPO2 over truncated normals (Auto Seg-Loss; docs/paper.md).

    Args:
        space: a SearchSpace-like object (config key "theta": list of floats), or a dict of
            name -> Box(low, high) / tune.uniform / tune.loguniform (tuples are constants),
            or None to take the box-shaped entries of Tune's param_space.
        metric, mode: the result key to optimise and "max"/"min".
        steps: T, PPO steps (12). samples_per_step: M, trials per step (32).
        config: PPO2's settings, an ``autoloss_ray.search.PPO2Config`` (default: the
            paper's): sigma, clip_eps, lr, update_steps, baseline, include_mean, the sigma
            schedule sigma_decay/sigma_min, startup, advantages, mirrored; see
            ``autoloss_ray.search.ppo.PPO2``.
        **settings: any of those settings as a keyword (``PPO2Searcher(space, sigma=0.3)``),
            replacing the config's value.
        failure_reward: metric value given to failed / NaN trials (None, the default: the
            worst valid value seen so far for the mode).
        points_to_evaluate: configs (or vectors) evaluated first, in step 0; the first one is
            the initial mu (e.g. a paper preset).
        seed: sampling seed. step_callback: picklable callable(record) after each update.
    """

    @with_step_keywords(extra_keywords=True)
    def __init__(self, space: Any = None, *, config: PPO2Config | None = None,
                 **settings: Any) -> None:
        # the step settings go to StepSearcher, the others are PPO2's; checks every PPO2
        # setting now, even when the space comes later; they are kept as keyword arguments
        # (the attribute searchers pickled by earlier versions have)
        step = {k: settings.pop(k) for k in STEP_SETTINGS if k in settings}
        self._ppo_kwargs = PPO2Config.of(config, **settings).as_dict()
        super().__init__(space, **step)

    def _make_optimizer(self, space: BoxSpace, mu0: np.ndarray) -> PPO2:
        return PPO2(
            low=space.low,
            high=space.high,
            mu0=mu0,
            samples_per_step=self.samples_per_step,
            seed=self.seed,
            **self._ppo_kwargs,
        )

    def _optimizer_from_state(self, state: dict) -> PPO2:
        return PPO2.from_state_dict(state)

    @property
    def config(self) -> PPO2Config:
        """PPO2's settings of this search."""
        return PPO2Config(**self._ppo_kwargs)

    @property
    def mu(self) -> np.ndarray:
        """Current policy mean (search coordinates)."""
        return np.asarray(self.optimizer.mu, dtype=np.float64)


class RandomSearcher(StepSearcher):
    """Random search over the same box, in the same steps (the paper's Fig. 3 baseline).

    Bounded dimensions are uniform; dimensions with an infinite bound are normal around the
    space's init (or the first point) with ``sigma``.
    """

    @with_step_keywords()
    def __init__(self, space: Any = None, *, sigma: float = DEFAULT_SIGMA,
                 **keywords: Any) -> None:
        StepSettings.of(type(self).__name__, keywords)  # an unknown keyword first, as before
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
        self._sigma = float(sigma)
        super().__init__(space, **keywords)

    def _make_optimizer(self, space: BoxSpace, mu0: np.ndarray) -> RandomSearch:
        return RandomSearch(
            low=space.low,
            high=space.high,
            samples_per_step=self.samples_per_step,
            seed=self.seed,
            mu0=mu0,
            sigma=self._sigma,
        )

    def _optimizer_from_state(self, state: dict) -> RandomSearch:
        opt = RandomSearch(
            low=state["low"], high=state["high"], samples_per_step=state["samples_per_step"],
            mu0=state["mu0"], sigma=state["sigma"],
        )
        opt.load_state_dict(state)
        return opt
