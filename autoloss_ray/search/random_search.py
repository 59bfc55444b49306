"""Random search over the box of a search (the paper's Fig. 3 baseline), ask/tell like PPO2."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autoloss_ray.search._ask_tell import AskTell
from autoloss_ray.search.config import DEFAULT_SAMPLES_PER_STEP, DEFAULT_SIGMA
from autoloss_ray.search.truncnorm import TruncatedNormal

__all__ = ["RandomSearch"]


class RandomSearch(AskTell):
    """Random search over the same box (the paper's Fig. 3 baseline), same ask/tell API.

    Bounded dimensions are sampled uniformly; a dimension with an infinite bound is sampled
    from a (truncated) normal around ``mu0`` (default 0 clipped into the box) with ``sigma``.
    ``best`` is the best single sample seen, ``best_reward`` its reward.
    """

    _kind_name = "random"

    def __init__(
        self,
        *,
        low: Any,
        high: Any,
        samples_per_step: int = DEFAULT_SAMPLES_PER_STEP,
        seed: Any = None,
        mu0: Any = None,
        sigma: float = DEFAULT_SIGMA,
    ) -> None:
        self._init_common(low, high, samples_per_step, seed)
        if not (isinstance(sigma, (int, float, np.floating)) and math.isfinite(sigma)) or (
            sigma <= 0
        ):
            raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
        self.sigma = float(sigma)
        if mu0 is None:
            mu0 = np.clip(np.zeros_like(self.low), self.low, self.high)
            box = np.isfinite(self.low) & np.isfinite(self.high)
            mu0 = np.where(box, 0.5 * (np.where(box, self.low, 0) + np.where(box, self.high, 0)),
                           mu0)
        self.mu0 = self._check_mu0(mu0)
        self.dist = TruncatedNormal(self.low, self.high)
        self._best: np.ndarray | None = None
        self._best_reward = -math.inf

    @property
    def mu(self) -> np.ndarray:
        return self.mu0.copy()

    def _draw(self) -> np.ndarray:
        m, d = self.samples_per_step, self.dim
        box = np.isfinite(self.low) & np.isfinite(self.high)
        u = self._rng.random((m, d))
        lo = np.where(box, self.low, 0.0)
        hi = np.where(box, self.high, 1.0)
        x = lo + u * (hi - lo)
        if not box.all():
            normal = self.dist.sample(self.mu0, self.sigma, m, self._rng)
            x = np.where(box, x, normal)
        return np.clip(x, self.low, self.high)

    def tell(self, thetas: Any, rewards: Any) -> None:
        x, r = self._check_tell(thetas, rewards)
        i = int(np.argmax(r))
        if r[i] > self._best_reward:
            self._best_reward = float(r[i])
            self._best = x[i].copy()
        self.history.append(
            {
                "step": self.step,
                "mu": self.mu0.tolist(),
                "sigma": self.sigma,
                "thetas": x.tolist(),
                "rewards": r.tolist(),
                "mean_reward": float(r.mean()),
                "mu_next": self.mu0.tolist(),
            }
        )
        self.step += 1
        self._pending = None

    @property
    def best(self) -> np.ndarray:
        return self.mu0.copy() if self._best is None else self._best.copy()

    @property
    def best_reward(self) -> float:
        return self._best_reward

    def state_dict(self) -> dict[str, Any]:
        state = self._common_state()
        state.update(
            sigma=self.sigma,
            mu0=self.mu0.tolist(),
            best=None if self._best is None else self._best.tolist(),
            best_reward=self._best_reward,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_common(state)
        self.sigma = float(state["sigma"])
        self.mu0 = np.asarray(state["mu0"], dtype=np.float64)
        self.dist = TruncatedNormal(self.low, self.high)
        self._best = None if state["best"] is None else np.asarray(state["best"])
        self._best_reward = float(state["best_reward"])

    def __repr__(self) -> str:
        return f"RandomSearch(D={self.dim}, M={self.samples_per_step}, step={self.step})"
