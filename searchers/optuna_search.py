"""TPE and CMA-ES on the same box, steps and store as PPO2: Ray Tune's ``OptunaSearch`` inside.

``TPESearcher`` and ``CMAESSearcher`` are step searchers like :class:`searchers.PPO2Searcher`
(same ``suggest``/``on_trial_complete`` protocol, failure handling, step records, ``replay``),
whose ask/tell optimizer is Ray Tune's own :class:`ray.tune.search.optuna.OptunaSearch` with
optuna's ``TPESampler`` or ``CmaEsSampler``, seeded:

* the space: one float domain per dimension of the box, ``tune.uniform(low[d], high[d])``
  (converted with ``OptunaSearch.convert_search_space``), named ``theta_0 .. theta_{D-1}``;
  the trial config gets the whole vector as ``"theta"``, as PPO2's trials do;
* the start: the box's init (or the first point of ``points_to_evaluate``) is the first trial
  (``OptunaSearch(points_to_evaluate=[init])``, an enqueued optuna trial); CMA-ES also takes
  it as ``x0`` with ``sigma0=sigma``;
* a step is a block of ``samples_per_step`` (M) consecutive trials: the M configs of a step
  are asked together and the M results told together once all are in, so the sampler sees
  only whole steps (TPE: ``n_startup_trials=M``, i.e. the first step is its random start-up,
  ``constant_liar`` spreads a step's asks; CMA-ES: ``popsize=M``, one generation per step
  from step 1 on: optuna's CmaEsSampler samples uniformly until a trial has completed, so
  step 0 is the start plus M-1 uniform draws for both);
* the answer (``best_theta``, the step record's ``mu``/``best_mu``): the best trial's theta.

Resume (``replay``) is exact: the history is restored *and* the samplers' random streams,
because a fresh seeded searcher re-asks every recorded step in the same order with the same
tells before it (the draws are checked against the recorded thetas), so the samples that
remain are the ones the interrupted run would have drawn. What is not reproduced is only what
depends on things outside the search (e.g. optuna versions that sample differently).
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoloss_ray.search.config import DEFAULT_SIGMA
from searchers.space import BoxSpace
from searchers.step_searcher import StepSearcher
from searchers.step_settings import StepSettings, with_step_keywords

__all__ = ["TPESearcher", "CMAESSearcher", "require_optuna", "OPTUNA_SEARCHERS"]

OPTUNA_SEARCHERS = ("tpe", "cmaes")


def require_optuna(searcher: str) -> None:
    """Raise ``ImportError`` with one sentence when ``searcher`` needs a missing package."""
    if searcher not in OPTUNA_SEARCHERS:
        return
    missing = []
    try:
        import optuna  # noqa: F401
    except ImportError:
        missing.append("optuna")
    if searcher == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            missing.append("cmaes")
    if missing:
        raise ImportError(
            f"--searcher {searcher} needs the package(s) {', '.join(missing)}, which are not "
            "installed: pip install 'autoloss-ray[optuna]'"
        )


def _names(dim: int) -> list[str]:
    return [f"theta_{d}" for d in range(dim)]


class _OptunaAskTell:
    """Ask/tell over ``OptunaSearch`` in steps of ``samples_per_step`` (no Tune loop needed).

    ``ask()`` -> thetas [M, D]; ``tell(thetas [M, D], rewards [M])`` (higher is better).
    ``best`` / ``best_reward``: the best told trial; ``history``: one dict per step.
    """

    def __init__(self, space: BoxSpace, *, kind: str, samples_per_step: int,
                 mu0: np.ndarray, seed: int | None, sigma: float, start_at_mu0: bool) -> None:
        import optuna
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(
                f"{kind} needs a bounded box; got low {space.low.tolist()}, "
                f"high {space.high.tolist()}"
            )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.kind = kind
        self.samples_per_step = int(samples_per_step)
        self.names = _names(space.dim)
        self.low, self.high = space.low.copy(), space.high.copy()
        mu0 = np.clip(np.asarray(mu0, dtype=np.float64), self.low, self.high)
        start = {n: float(v) for n, v in zip(self.names, mu0)}
        seed = None if seed is None else int(seed)
        if kind == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=samples_per_step)
        elif kind == "cmaes":
            with warnings.catch_warnings():
                # x0 / sigma0 are deprecated since optuna 4.9 (removal in 6.0; pinned < 6)
                warnings.simplefilter("ignore", FutureWarning)
                sampler = optuna.samplers.CmaEsSampler(
                    x0=start, sigma0=float(sigma), popsize=self.samples_per_step, seed=seed,
                    warn_independent_sampling=False,
                )
        else:
            raise ValueError(f"kind must be 'tpe' or 'cmaes'; got {kind!r}")
        domains = {n: tune.uniform(float(lo), float(hi))
                   for n, lo, hi in zip(self.names, self.low, self.high)}
        self.search = OptunaSearch(
            space=OptunaSearch.convert_search_space(domains),
            metric="reward",
            mode="max",
            points_to_evaluate=[start] if start_at_mu0 else None,
            sampler=sampler,
        )
        self._asked = 0
        self._pending: list[str] = []
        self.best = mu0.copy()
        self.best_reward = -math.inf
        self.history: list[dict[str, Any]] = []

    def ask(self) -> np.ndarray:
        if self._pending:
            raise RuntimeError("ask() again before the last step was told")
        ids = [f"trial_{self._asked + i}" for i in range(self.samples_per_step)]
        rows = []
        # the cmaes package divides by c_mu, which is 0 for a population of M <= 3 (mu_eff =
        # 1), inside a min() where the resulting inf is harmless; without the errstate each
        # small-M CMA-ES step printed two RuntimeWarnings
        with np.errstate(divide="ignore"):
            for tid in ids:
                params = self.search.suggest(tid)
                rows.append([float(params[n]) for n in self.names])
        self._asked += len(ids)
        self._pending = ids
        return np.clip(np.asarray(rows, dtype=np.float64), self.low, self.high)

    def tell(self, thetas: np.ndarray, rewards: Sequence[float]) -> None:
        thetas = np.asarray(thetas, dtype=np.float64)
        rewards = np.asarray(rewards, dtype=np.float64)
        if len(self._pending) != len(rewards) or thetas.shape[0] != len(rewards):
            raise ValueError(
                f"tell() needs the {len(self._pending)} results of the step asked; got "
                f"{len(rewards)} rewards and {thetas.shape[0]} thetas"
            )
        before = self.best.copy()
        for tid, r in zip(self._pending, rewards):
            self.search.on_trial_complete(tid, {"reward": float(r)})
        self._pending = []
        i = int(np.argmax(rewards))
        if rewards[i] > self.best_reward:
            self.best_reward = float(rewards[i])
            self.best = thetas[i].copy()
        self.history.append({"mu": before.tolist(), "mu_next": self.best.tolist(),
                             "sigma": None})

    def state_dict(self) -> dict[str, Any]:
        return {"pickle": pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> _OptunaAskTell:
        obj = cls.__new__(cls)
        obj.__dict__.update(pickle.loads(state["pickle"]))
        return obj


class _OptunaStepSearcher(StepSearcher):
    _kind = ""

    @with_step_keywords(seed="int | None")
    def __init__(self, space: Any = None, *, sigma: float = DEFAULT_SIGMA,
                 **keywords: Any) -> None:
        s = StepSettings.of(type(self).__name__, keywords)
        points_to_evaluate, seed = s.points_to_evaluate, s.seed
        require_optuna(self._kind)
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
        if points_to_evaluate is not None and len(points_to_evaluate) > 1:
            raise ValueError(
                f"{type(self).__name__} takes at most one point to evaluate (the start); got "
                f"{len(points_to_evaluate)}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None; got {seed!r}")
        self._sigma = float(sigma)
        self._start = list(points_to_evaluate) if points_to_evaluate else []
        # the start point goes to optuna (an enqueued trial), not to the step machinery
        super().__init__(space, **{**keywords, "points_to_evaluate": None})

    def _make_optimizer(self, space: BoxSpace, mu0: np.ndarray) -> _OptunaAskTell:
        if self._start:
            mu0 = space.from_config(self._start[0])
        return _OptunaAskTell(space, kind=self._kind, samples_per_step=self.samples_per_step,
                              mu0=mu0, seed=self.seed, sigma=self._sigma, start_at_mu0=True)

    def _optimizer_from_state(self, state: dict) -> _OptunaAskTell:
        return _OptunaAskTell.from_state_dict(state)

    def get_state(self) -> dict:
        state = super().get_state()
        state["sigma"], state["start"] = self._sigma, self._start
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._sigma, self._start = state["sigma"], state["start"]


class TPESearcher(_OptunaStepSearcher):
    """Optuna's TPE (through Ray Tune's ``OptunaSearch``) in steps of M trials; see module."""

    _kind = "tpe"


class CMAESSearcher(_OptunaStepSearcher):
    """Optuna's CMA-ES (through Ray Tune's ``OptunaSearch``), one generation of M per step."""

    _kind = "cmaes"
