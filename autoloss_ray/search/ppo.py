"""PPO2 over truncated normals, as a pure ask/tell optimizer (numpy/scipy; no ray).

The search algorithm of Auto Seg-Loss (Li et al., ICLR 2021; docs/paper.md). The policy is an
independent truncated normal per dimension on a box ``[low, high]`` with mean ``mu`` and a fixed
scale. Each step the caller asks for ``M`` samples, evaluates them, and tells the rewards back;
``mu`` then moves by maximising the clipped PPO objective

    J(mu) = sum_d mean_i min(r_id A_i, clip(r_id, 1 - eps, 1 + eps) A_i),
    r_id = p(x_id | mu_d) / p(x_id | mu_old_d)        (ratio per dimension)

with Adam (a fresh optimizer state per update). ``mu`` is kept as unconstrained parameters:
logits for dimensions bounded on both sides, softplus offsets for half-bounded ones and the
identity for unbounded ones (where the policy is a plain normal). The gradient of J is
analytic (no autograd), so one update at D=24, M=32, 60 inner steps takes a few milliseconds.
The update's math (:func:`ppo_update`, Adam, the centred ranks) is
:mod:`autoloss_ray.search.ppo_math`; this module is the optimizer: its settings, sampling,
history and state.

Conventions (documented deviations from the paper's [0,1] setting): the policy scale of a
dimension bounded on both sides is ``sigma * (high - low)`` (identical to ``sigma`` on the unit
box), of other dimensions ``sigma``. ``best`` is the mu of the step with the best mean reward
(the paper's choice); for :class:`RandomSearch` it is the best single sample.

Example::

    opt = PPO2(low=np.zeros(6), high=np.ones(6), mu0=np.full(6, 0.5), seed=0)
    for _ in range(12):
        thetas = opt.ask()                       # [M, D]
        opt.tell(thetas, [f(t) for t in thetas])
    theta = opt.best
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autoloss_ray.search._ask_tell import AskTell
from autoloss_ray.search._mean_param import MeanParameterization
from autoloss_ray.search.config import (
    ADVANTAGES,
    DEFAULT_SAMPLES_PER_STEP,
    STARTUPS,
    PPO2Config,
)
from autoloss_ray.search.ppo_math import PPOUpdate, adam_step, centred_ranks, ppo_update
from autoloss_ray.search.truncnorm import TruncatedNormal

__all__ = ["PPO2", "PPO2Config", "PPOUpdate", "ppo_update", "adam_step", "centred_ranks",
           "STARTUPS", "ADVANTAGES"]


# --------------------------------------------------------------------------- PPO2
class PPO2(AskTell):
    """PPO2 over independent truncated normals on a box (ask/tell).

    Args (keyword-only):
        low, high: box bounds [D] (infinite bounds allowed).
        mu0: initial mean [D], inside the box (boundary values are nudged inside).
        samples_per_step: M >= 2 samples per step (paper: 32).
        seed: seed of the sampling RNG (int, None, or anything numpy accepts).
        config: the settings below (sigma ... mirrored) as one
            :class:`~autoloss_ray.search.config.PPO2Config` (default: the paper's); each
            may also be given as a keyword, which replaces the config's value
            (``PPO2(..., sigma=0.3)``).
        sigma: policy scale > 0 (relative to the box width for bounded dimensions).
        sigma_decay: optional schedule: the scale of step t is
            ``max(sigma * sigma_decay**t, sigma_min)`` (default 1.0: a fixed scale, the paper's).
        sigma_min: floor of the scheduled scale (default 0.0).
        clip_eps: PPO clip epsilon (0.2). lr: Adam learning rate on the mu parameters (0.2).
        update_steps: Adam steps per update (60).
        baseline: "mean" (A_i = R_i - mean R) or "mu" (A_i = R_i - R_0; needs include_mean).
        include_mean: make sample 0 of every step mu itself.
        startup: "policy" (default, the paper's: step 0 is drawn from the policy at mu0) or
            "uniform": step 0 is drawn uniformly in the box (dimensions with an infinite
            bound from the policy) and is not a PPO update: mu_1 is its best sample. Its
            record's ``mu`` is the uniform draw's mean (the box centre) and ``startup`` is
            True.
        advantages: "baseline" (default: A_i = R_i - baseline, see ``baseline``) or "rank":
            the centred ranks of the rewards, (rank_i - 1) / (M - 1) - 1/2 less the
            baseline's (the mean rank, or sample 0's rank with baseline "mu"); ties share
            their mean rank. Invariant to any increasing transform of the rewards, so one
            failed trial's 0.0 reward weighs no more than the worst valid one.
        mirrored: draw the step's free samples (all but sample 0 with include_mean) in
            antithetic pairs: quantiles u and 1 - u of each dimension's truncated normal,
            i.e. standard-normal noise +z and -z mapped through the truncation (see
            :meth:`TruncatedNormal.sample`); each sample's log-density stays exact.

    Attributes: ``mu`` [D], ``best`` [D], ``best_reward``, ``step``, ``history`` (list of dicts
    with step, mu, sigma, thetas, rewards, mean_reward, mu_next (lists of floats) and the
    update's diagnostics clip_fraction, approx_kl; see :func:`ppo_update`).
    """

    _kind_name = "ppo2"

    def __init__(
        self,
        *,
        low: Any,
        high: Any,
        mu0: Any,
        samples_per_step: int = DEFAULT_SAMPLES_PER_STEP,
        seed: Any = None,
        config: PPO2Config | None = None,
        **settings: Any,
    ) -> None:
        self._init_common(low, high, samples_per_step, seed)
        self._set_config(PPO2Config.of(config, **settings))  # checks every setting
        self._setup_geometry()
        self._z = self._to_z(self._check_mu0(mu0))
        self.mu0 = self.mu.copy()

    def _set_config(self, cfg: PPO2Config) -> None:
        self.startup = cfg.startup
        self.advantage_rule = cfg.advantages
        self.mirrored = bool(cfg.mirrored)
        self.sigma_decay = float(cfg.sigma_decay)
        self.sigma_min = float(cfg.sigma_min)
        self.sigma = float(cfg.sigma)
        self.clip_eps = float(cfg.clip_eps)
        self.lr = float(cfg.lr)
        self.update_steps = int(cfg.update_steps)
        self.baseline = cfg.baseline
        self.include_mean = bool(cfg.include_mean)

    @property
    def config(self) -> PPO2Config:
        """The settings this optimizer runs with."""
        return PPO2Config(
            sigma=self.sigma, clip_eps=self.clip_eps, lr=self.lr,
            update_steps=self.update_steps, baseline=self.baseline,
            include_mean=self.include_mean, sigma_decay=self.sigma_decay,
            sigma_min=self.sigma_min, startup=self.startup, advantages=self.advantage_rule,
            mirrored=self.mirrored,
        )

    # ---- geometry
    def _setup_geometry(self) -> None:
        self._param = MeanParameterization(self.low, self.high)
        self._width = self._param.width
        self.dist = TruncatedNormal(self.low, self.high)

    def _to_z(self, mu: np.ndarray) -> np.ndarray:
        return self._param.to_z(mu)

    def _from_z(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mu(z) and d mu / d z."""
        return self._param.from_z(z)

    @property
    def current_sigma(self) -> float:
        """The scale of the current step: ``max(sigma * sigma_decay**step, sigma_min)``."""
        if self.sigma_decay == 1.0:
            return self.sigma
        return max(self.sigma * self.sigma_decay**self.step, self.sigma_min)

    @property
    def scale(self) -> np.ndarray:
        """Per-dimension policy scale of the current step [D]."""
        return self.current_sigma * self._width

    @property
    def mu(self) -> np.ndarray:
        mu = self._from_z(self._z)[0]
        return np.clip(mu, self.low, self.high)

    @property
    def _uniform_step(self) -> bool:
        """The current step is the uniform start-up step."""
        return self.startup == "uniform" and self.step == 0

    def _box_centre(self) -> np.ndarray:
        """The uniform draw's mean [D]: the box centre, mu0 where a bound is infinite."""
        box = np.isfinite(self.low) & np.isfinite(self.high)
        centre = 0.5 * (np.where(box, self.low, 0.0) + np.where(box, self.high, 0.0))
        return np.where(box, centre, self.mu0)

    # ---- ask/tell
    def _draw(self) -> np.ndarray:
        mu = self.mu
        m = self.samples_per_step
        if self._uniform_step:
            box = np.isfinite(self.low) & np.isfinite(self.high)
            u = self._rng.random((m, self.dim))
            lo, hi = np.where(box, self.low, 0.0), np.where(box, self.high, 1.0)
            x = lo + u * (hi - lo)
            if not box.all():
                x = np.where(box, x, self.dist.sample(mu, self.scale, m, self._rng))
            return np.clip(x, self.low, self.high)
        if not self.mirrored:
            x = self.dist.sample(mu, self.scale, m, self._rng)
            if self.include_mean:
                x[0] = mu
            return x
        first = 1 if self.include_mean else 0
        x = np.empty((m, self.dim))
        x[first:] = self.dist.sample(mu, self.scale, m - first, self._rng, mirrored=True)
        if self.include_mean:
            x[0] = mu
        return x

    def objective(self, thetas: Any, advantages: Any, mu: Any, mu_old: Any) -> float:
        """Clipped PPO objective J(mu) for samples drawn at mu_old (for tests/diagnostics)."""
        x = np.asarray(thetas, dtype=np.float64)
        a = np.asarray(advantages, dtype=np.float64)[:, None]
        lp_old = self.dist.log_prob(x, mu_old, self.scale)
        lp = self.dist.log_prob(x, mu, self.scale)
        r = np.exp(lp - lp_old)
        rc = np.clip(r, 1 - self.clip_eps, 1 + self.clip_eps)
        return float(np.minimum(r * a, rc * a).mean(axis=0).sum())

    def advantages(self, rewards: Any, *, rank: bool = False) -> np.ndarray:
        """The advantages A [M] of rewards [M] (see ``advantages`` and ``baseline``);
        ``rank=True``: by rank whatever the rule (a step with stopped samples)."""
        r = np.asarray(rewards, dtype=np.float64)
        if rank or self.advantage_rule == "rank":
            r = centred_ranks(r)
        base = r[0] if self.baseline == "mu" else r.mean()
        return r - base

    # multi-fidelity: StepProtocol passes the mask of samples a scheduler stopped
    ranks_stopped = True

    def tell(self, thetas: Any, rewards: Any, *, stopped: Any = None) -> None:
        """Feed the rewards of the current step's thetas [M, D] and update mu.

        ``stopped`` (optional bool [M]): samples a scheduler stopped early. Their rewards must
        already rank them below every survivor (``StepProtocol`` places them with
        :func:`autoloss_ray.search.multifidelity.stopped_below`); a step with any is learnt
        from by rank (centred ranks, whatever ``advantages``), as rung and final rewards have
        no common scale. The history entry records the mask as ``stopped``."""
        x, r = self._check_tell(thetas, rewards)
        stop = (np.zeros(r.shape, dtype=bool) if stopped is None
                else np.asarray(stopped, dtype=bool))
        if stop.shape != r.shape:
            raise ValueError(f"stopped must be a bool mask of shape ({r.size},); got shape "
                             f"{stop.shape}")
        if stop.any() and np.max(r[stop]) >= np.min(r[~stop], initial=np.inf):
            raise ValueError("stopped samples must be told below every survivor of the step "
                             "(see autoloss_ray.search.step_protocol.stopped_below)")
        mu_old = self.mu
        uniform = self._uniform_step
        if uniform:  # the start-up step: no PPO update, mu_1 = its best sample
            mu_old = self._box_centre()
            self._z = self._to_z(x[int(np.argmax(r))])
            clip_fraction = approx_kl = None
        else:
            update = ppo_update(
                thetas=x, advantages=self.advantages(r, rank=bool(stop.any())), z_old=self._z,
                param=self._param,
                low=self.low, high=self.high, scale=self.scale, clip_eps=self.clip_eps,
                lr=self.lr, update_steps=self.update_steps,
            )
            self._z = update.z
            clip_fraction, approx_kl = update.clip_fraction, update.approx_kl
        self.history.append(
            {
                "step": self.step,
                "mu": mu_old.tolist(),
                "sigma": self.current_sigma,
                "thetas": x.tolist(),
                "rewards": r.tolist(),
                "mean_reward": float(r.mean()),
                "mu_next": self.mu.tolist(),
                "clip_fraction": clip_fraction,
                "approx_kl": approx_kl,
                **({"startup": True} if uniform else {}),
                **({"stopped": stop.tolist()} if stop.any() else {}),
            }
        )
        self.step += 1
        self._pending = None

    @property
    def best(self) -> np.ndarray:
        """mu of the step with the best mean reward (mu0 before the first tell)."""
        if not self.history:
            return self.mu.copy()
        i = int(np.argmax([h["mean_reward"] for h in self.history]))
        return np.asarray(self.history[i]["mu"], dtype=np.float64)

    @property
    def best_reward(self) -> float:
        """The best step mean reward so far (-inf before the first tell)."""
        if not self.history:
            return -math.inf
        return float(max(h["mean_reward"] for h in self.history))

    # ---- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically (plain Python types + numpy RNG state)."""
        state = self._common_state()
        state.update(self.config.as_dict(), z=self._z.tolist(), mu0=self.mu0.tolist())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_common(state)
        self.sigma = float(state["sigma"])
        self.clip_eps = float(state["clip_eps"])
        self.lr = float(state["lr"])
        self.update_steps = int(state["update_steps"])
        self.baseline = state["baseline"]
        self.include_mean = bool(state["include_mean"])
        self.sigma_decay = float(state.get("sigma_decay", 1.0))  # states before the schedule
        self.sigma_min = float(state.get("sigma_min", 0.0))
        # states written before these options: the paper's defaults
        self.startup = state.get("startup", "policy")
        self.advantage_rule = state.get("advantages", "baseline")
        self.mirrored = bool(state.get("mirrored", False))
        self._setup_geometry()
        self._z = np.asarray(state["z"], dtype=np.float64)
        self.mu0 = np.asarray(state["mu0"], dtype=np.float64)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PPO2:
        obj = cls(
            low=state["low"],
            high=state["high"],
            mu0=state["mu0"],
            samples_per_step=state["samples_per_step"],
            sigma=state["sigma"],
        )
        obj.load_state_dict(state)
        return obj

    def __repr__(self) -> str:
        return (
            f"PPO2(D={self.dim}, M={self.samples_per_step}, sigma={self.sigma}, "
            f"step={self.step})"
        )
