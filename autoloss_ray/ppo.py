"""PPO2 over truncated normals, as a pure ask/tell optimizer (numpy/scipy; no ray).

The search algorithm of Auto Seg-Loss (Li et al., ICLR 2021; DESIGN section 4). The policy is an
independent truncated normal per dimension on a box ``[low, high]`` with mean ``mu`` and a fixed
scale. Each step the caller asks for ``M`` samples, evaluates them, and tells the rewards back;
``mu`` then moves by maximising the clipped PPO objective

    J(mu) = sum_d mean_i min(r_id A_i, clip(r_id, 1 - eps, 1 + eps) A_i),
    r_id = p(x_id | mu_d) / p(x_id | mu_old_d)        (ratio per dimension)

with Adam (a fresh optimizer state per update). ``mu`` is kept as unconstrained parameters:
logits for dimensions bounded on both sides, softplus offsets for half-bounded ones and the
identity for unbounded ones (where the policy is a plain normal). The gradient of J is
analytic (no autograd), so one update at D=24, M=32, 60 inner steps takes a few milliseconds.

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

import copy
import math
from typing import Any

import numpy as np
from scipy import special

__all__ = ["TruncatedNormal", "PPO2", "RandomSearch"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_STATE_FORMAT = "autoloss-ray/ppo-state"

# Dimension kinds of the mu parameterization.
_BOX, _LOWER, _UPPER, _FREE = 0, 1, 2, 3


# --------------------------------------------------------------------------- helpers
def _as_box(low: Any, high: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a box. Returns float64 arrays [D]; infinite bounds are allowed."""
    lo = np.atleast_1d(np.asarray(low, dtype=np.float64)).copy()
    hi = np.atleast_1d(np.asarray(high, dtype=np.float64)).copy()
    if lo.ndim != 1 or hi.ndim != 1 or lo.shape != hi.shape:
        raise ValueError(
            f"low and high must be 1-D arrays of the same length; got shapes {lo.shape} "
            f"and {hi.shape}"
        )
    if lo.size == 0:
        raise ValueError("the box is empty: low and high have length 0; expected D >= 1")
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise ValueError("low and high must not contain NaN")
    if np.isposinf(lo).any() or np.isneginf(hi).any():
        raise ValueError("low may not be +inf and high may not be -inf")
    bad = np.flatnonzero(~(hi > lo))
    if bad.size:
        d = int(bad[0])
        raise ValueError(
            f"the box is empty or inverted: expected low < high in every dimension, got "
            f"low[{d}]={lo[d]} >= high[{d}]={hi[d]}"
        )
    return lo, hi


def _log1mexp(d: np.ndarray) -> np.ndarray:
    """log(1 - exp(d)) for d <= 0, accurate in both regimes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def _log_mass(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """log(Phi(beta) - Phi(alpha)) for alpha < beta (standardised bounds, may be infinite)."""
    flip = alpha > 0  # both bounds in the upper tail: use the mirror image for accuracy
    lo = np.where(flip, -beta, alpha)
    hi = np.where(flip, -alpha, beta)
    lhi = special.log_ndtr(hi)
    llo = special.log_ndtr(lo)
    return lhi + _log1mexp(llo - lhi)


def _log_phi(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return -0.5 * z * z - _LOG_SQRT_2PI


class TruncatedNormal:
    """Independent truncated normals on the box ``[low, high]`` (D dimensions).

    Infinite bounds are allowed; a dimension with both bounds infinite is a plain normal.
    ``mu`` and ``sigma`` broadcast against ``[D]``; ``mu`` may lie outside the box.
    """

    def __init__(self, low: Any, high: Any) -> None:
        self.low, self.high = _as_box(low, high)

    @property
    def dim(self) -> int:
        return int(self.low.size)

    def _standardise(self, mu: Any, sigma: Any) -> tuple[np.ndarray, np.ndarray]:
        mu = np.broadcast_to(np.asarray(mu, dtype=np.float64), self.low.shape)
        sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), self.low.shape)
        if not np.all(np.isfinite(mu)):
            raise ValueError(f"mu must be finite; got {mu}")
        if not np.all(np.isfinite(sigma)) or not np.all(sigma > 0):
            raise ValueError(f"sigma must be finite and > 0; got {sigma}")
        return mu, sigma

    def sample(self, mu: Any, sigma: Any, size: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``size`` samples -> array [size, D], every entry inside the box.

        Inverse-CDF sampling in log space (``ndtri_exp``), mirrored when the box lies in the
        upper tail, so it stays exact however far mu is from the box.
        """
        mu, sigma = self._standardise(mu, sigma)
        if not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"size must be a non-negative int; got {size!r}")
        alpha = (self.low - mu) / sigma
        beta = (self.high - mu) / sigma
        flip = alpha > 0
        a = np.where(flip, -beta, alpha)  # after mirroring a <= 0
        b = np.where(flip, -alpha, beta)
        u = rng.random((int(size), self.dim))
        with np.errstate(divide="ignore"):
            logp = np.logaddexp(
                special.log_ndtr(a) + np.log1p(-u), special.log_ndtr(b) + np.log(u)
            )
        z = special.ndtri_exp(np.minimum(logp, 0.0))
        z = np.clip(z, a, b)
        z = np.where(flip, -z, z)
        x = mu + sigma * z
        return np.clip(x, self.low, self.high)

    def log_prob(self, x: Any, mu: Any, sigma: Any) -> np.ndarray:
        """Log-density per dimension -> array shaped like ``x`` ([..., D]); -inf outside."""
        mu, sigma = self._standardise(mu, sigma)
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1:] != self.low.shape:
            raise ValueError(f"x must have last dimension {self.dim}; got shape {x.shape}")
        alpha = (self.low - mu) / sigma
        beta = (self.high - mu) / sigma
        z = (x - mu) / sigma
        out = _log_phi(z) - np.log(sigma) - _log_mass(alpha, beta)
        inside = (x >= self.low) & (x <= self.high)
        return np.where(inside, out, -np.inf)

    def __repr__(self) -> str:
        return f"TruncatedNormal(low={self.low.tolist()}, high={self.high.tolist()})"


# --------------------------------------------------------------------------- base class
def check_samples_per_step(samples_per_step: Any) -> int:
    """M as an int >= 2 (PPO needs an advantage to follow), or a ValueError."""
    if (
        isinstance(samples_per_step, bool)
        or not isinstance(samples_per_step, (int, np.integer))
        or samples_per_step < 2
    ):
        raise ValueError(f"samples_per_step (M) must be an int >= 2; got {samples_per_step!r}")
    return int(samples_per_step)


class _AskTell:
    """Shared ask/tell bookkeeping: validation, pending samples, history, state."""

    _kind_name = "base"

    def _init_common(self, low: Any, high: Any, samples_per_step: int, seed: Any) -> None:
        self.low, self.high = _as_box(low, high)
        self.samples_per_step = check_samples_per_step(samples_per_step)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._pending: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.low.size)

    def _check_mu0(self, mu0: Any) -> np.ndarray:
        mu0 = np.atleast_1d(np.asarray(mu0, dtype=np.float64)).copy()
        if mu0.shape != self.low.shape:
            raise ValueError(f"mu0 must have shape ({self.dim},); got shape {mu0.shape}")
        if not np.all(np.isfinite(mu0)):
            raise ValueError(f"mu0 must be finite; got {mu0.tolist()}")
        out = np.flatnonzero((mu0 < self.low) | (mu0 > self.high))
        if out.size:
            d = int(out[0])
            raise ValueError(
                f"mu0 lies outside the box: mu0[{d}]={mu0[d]} is not in "
                f"[{self.low[d]}, {self.high[d]}]"
            )
        return mu0

    def _check_tell(self, thetas: Any, rewards: Any) -> tuple[np.ndarray, np.ndarray]:
        if self._pending is None:
            raise ValueError(
                f"tell() without a pending ask(): step {self.step} has not been asked for its "
                "samples yet; call ask(), evaluate its thetas, then tell() their rewards"
            )
        x = np.asarray(thetas, dtype=np.float64)
        r = np.asarray(rewards, dtype=np.float64)
        m, d = self.samples_per_step, self.dim
        if x.shape != (m, d):
            raise ValueError(f"thetas must have shape (M, D) = ({m}, {d}); got {x.shape}")
        if r.shape != (m,):
            raise ValueError(
                f"rewards must be a sequence of M={m} numbers (one per theta); got shape "
                f"{r.shape}"
            )
        if not np.all(np.isfinite(r)):
            bad = np.flatnonzero(~np.isfinite(r)).tolist()
            raise ValueError(
                f"rewards must be finite; got NaN/inf at samples {bad} (map failed trials to "
                "a failure reward before telling)"
            )
        if not np.all(np.isfinite(x)) or np.any(x < self.low) or np.any(x > self.high):
            raise ValueError("every theta must be finite and lie inside the box [low, high]")
        return x, r

    def ask(self) -> np.ndarray:
        """The current step's samples -> array [M, D] (the same array until ``tell``)."""
        if self._pending is None:
            self._pending = self._draw()
        return self._pending.copy()

    # subclasses implement _draw, tell, _extra_state, _load_extra_state
    def _draw(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _common_state(self) -> dict[str, Any]:
        return {
            "format": _STATE_FORMAT,
            "version": 1,
            "kind": self._kind_name,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "samples_per_step": self.samples_per_step,
            "seed": self.seed,
            "step": self.step,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "pending": None if self._pending is None else self._pending.tolist(),
            "history": copy.deepcopy(self.history),
        }

    def _load_common(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not an {_STATE_FORMAT} state dict: {type(state).__name__}")
        if state.get("kind") != self._kind_name:
            raise ValueError(
                f"state dict is for {state.get('kind')!r}, cannot load into {self._kind_name!r}"
            )
        low, high = _as_box(state["low"], state["high"])
        if low.shape != self.low.shape:
            raise ValueError(
                f"state dict has D={low.size} but this optimizer has D={self.dim}"
            )
        self.low, self.high = low, high
        self.samples_per_step = int(state["samples_per_step"])
        self.seed = state["seed"]
        self.step = int(state["step"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._pending = None if state["pending"] is None else np.asarray(state["pending"])
        self.history = copy.deepcopy(state["history"])


# --------------------------------------------------------------------------- PPO2
class PPO2(_AskTell):
    """PPO2 over independent truncated normals on a box (ask/tell).

    Args (keyword-only):
        low, high: box bounds [D] (infinite bounds allowed).
        mu0: initial mean [D], inside the box (boundary values are nudged inside).
        samples_per_step: M >= 2 samples per step (paper: 32).
        sigma: policy scale > 0 (relative to the box width for bounded dimensions).
        sigma_decay: optional schedule: the scale of step t is
            ``max(sigma * sigma_decay**t, sigma_min)`` (default 1.0: a fixed scale, the paper's).
        sigma_min: floor of the scheduled scale (default 0.0).
        clip_eps: PPO clip epsilon (0.2). lr: Adam learning rate on the mu parameters (0.2).
        update_steps: Adam steps per update (60).
        baseline: "mean" (A_i = R_i - mean R) or "mu" (A_i = R_i - R_0; needs include_mean).
        include_mean: make sample 0 of every step mu itself.
        seed: seed of the sampling RNG (int, None, or anything numpy accepts).

    Attributes: ``mu`` [D], ``best`` [D], ``best_reward``, ``step``, ``history`` (list of dicts
    with step, mu, sigma, thetas, rewards, mean_reward, mu_next; lists of floats).
    """

    _kind_name = "ppo2"

    def __init__(
        self,
        *,
        low: Any,
        high: Any,
        mu0: Any,
        samples_per_step: int = 32,
        sigma: float = 0.2,
        clip_eps: float = 0.2,
        lr: float = 0.2,
        update_steps: int = 60,
        baseline: str = "mean",
        include_mean: bool = False,
        seed: Any = None,
        sigma_decay: float = 1.0,
        sigma_min: float = 0.0,
    ) -> None:
        self._init_common(low, high, samples_per_step, seed)
        if not (isinstance(sigma_decay, (int, float, np.floating)) and 0 < sigma_decay <= 1):
            raise ValueError(f"sigma_decay must be a number in (0, 1]; got {sigma_decay!r}")
        if not (isinstance(sigma_min, (int, float, np.floating)) and 0 <= sigma_min < math.inf):
            raise ValueError(f"sigma_min must be a finite number >= 0; got {sigma_min!r}")
        self.sigma_decay = float(sigma_decay)
        self.sigma_min = float(sigma_min)
        if not (isinstance(sigma, (int, float, np.floating)) and math.isfinite(sigma)) or (
            sigma <= 0
        ):
            raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
        if not (0 < float(clip_eps) < 1):
            raise ValueError(f"clip_eps must be in (0, 1); got {clip_eps!r}")
        if not (math.isfinite(float(lr)) and lr > 0):
            raise ValueError(f"lr must be > 0; got {lr!r}")
        if isinstance(update_steps, bool) or not isinstance(update_steps, (int, np.integer)) or (
            update_steps < 1
        ):
            raise ValueError(f"update_steps must be an int >= 1; got {update_steps!r}")
        if baseline not in ("mean", "mu"):
            raise ValueError(f"baseline must be 'mean' or 'mu'; got {baseline!r}")
        if baseline == "mu" and not include_mean:
            raise ValueError("baseline='mu' needs include_mean=True (sample 0 is mu itself)")
        self.sigma = float(sigma)
        self.clip_eps = float(clip_eps)
        self.lr = float(lr)
        self.update_steps = int(update_steps)
        self.baseline = baseline
        self.include_mean = bool(include_mean)
        self._setup_geometry()
        self._z = self._to_z(self._check_mu0(mu0))
        self.mu0 = self.mu.copy()

    # ---- geometry
    def _setup_geometry(self) -> None:
        lo_f, hi_f = np.isfinite(self.low), np.isfinite(self.high)
        self._kind = np.where(
            lo_f & hi_f, _BOX, np.where(lo_f, _LOWER, np.where(hi_f, _UPPER, _FREE))
        )
        self._all_box = bool(np.all(self._kind == _BOX))
        self._width = np.where(self._kind == _BOX, self.high - self.low, 1.0)
        self.dist = TruncatedNormal(self.low, self.high)
        # finite stand-ins for infinite bounds (unused where the kind ignores them)
        self._lo0 = np.where(lo_f, self.low, 0.0)
        self._hi0 = np.where(hi_f, self.high, 0.0)

    def _to_z(self, mu: np.ndarray) -> np.ndarray:
        k = self._kind
        tiny = 1e-9
        u = np.clip((mu - self._lo0) / self._width, tiny, 1 - tiny)
        z_box = np.log(u) - np.log1p(-u)
        dl = np.maximum(mu - self._lo0, tiny)
        z_low = np.where(dl > 30, dl, np.log(np.expm1(np.minimum(dl, 30))))
        du = np.maximum(self._hi0 - mu, tiny)
        z_up = np.where(du > 30, du, np.log(np.expm1(np.minimum(du, 30))))
        return np.select([k == _BOX, k == _LOWER, k == _UPPER], [z_box, z_low, z_up], mu)

    def _from_z(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mu(z) and d mu / d z."""
        s = special.expit(z)
        if self._all_box:  # the common case (e.g. Bezier parameters): no branching
            return self._lo0 + self._width * s, self._width * s * (1 - s)
        k = self._kind
        sp = np.logaddexp(0.0, z)  # softplus
        mu = np.where(k == _BOX, self._lo0 + self._width * s,
                      np.where(k == _LOWER, self._lo0 + sp,
                               np.where(k == _UPPER, self._hi0 - sp, z)))
        dmu = np.where(k == _BOX, self._width * s * (1 - s),
                       np.where(k == _LOWER, s, np.where(k == _UPPER, -s, 1.0)))
        return mu, dmu

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

    # ---- ask/tell
    def _draw(self) -> np.ndarray:
        mu = self.mu
        x = self.dist.sample(mu, self.scale, self.samples_per_step, self._rng)
        if self.include_mean:
            x[0] = mu
        return x

    def _grad_terms(self, x: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension log-density [M, D] at mu and its derivative wrt mu [M, D]."""
        s = self.scale
        alpha = (self.low - mu) / s
        beta = (self.high - mu) / s
        logz = _log_mass(alpha, beta)
        z = (x - mu) / s
        logp = _log_phi(z) - np.log(s) - logz
        # d/dmu log Z = (phi(alpha) - phi(beta)) / (s Z); phi(+-inf) = 0
        pa = np.exp(_log_phi(alpha) - logz)
        pb = np.exp(_log_phi(beta) - logz)
        pa = np.where(np.isfinite(alpha), pa, 0.0)
        pb = np.where(np.isfinite(beta), pb, 0.0)
        dlogp = z / s - (pa - pb) / s
        return logp, dlogp

    def objective(self, thetas: Any, advantages: Any, mu: Any, mu_old: Any) -> float:
        """Clipped PPO objective J(mu) for samples drawn at mu_old (for tests/diagnostics)."""
        x = np.asarray(thetas, dtype=np.float64)
        a = np.asarray(advantages, dtype=np.float64)[:, None]
        lp_old = self.dist.log_prob(x, mu_old, self.scale)
        lp = self.dist.log_prob(x, mu, self.scale)
        r = np.exp(lp - lp_old)
        rc = np.clip(r, 1 - self.clip_eps, 1 + self.clip_eps)
        return float(np.minimum(r * a, rc * a).mean(axis=0).sum())

    def advantages(self, rewards: Any) -> np.ndarray:
        r = np.asarray(rewards, dtype=np.float64)
        base = r[0] if self.baseline == "mu" else r.mean()
        return r - base

    def tell(self, thetas: Any, rewards: Any) -> None:
        """Feed the rewards of the current step's thetas [M, D] and update mu."""
        x, r = self._check_tell(thetas, rewards)
        adv = self.advantages(r)[:, None]
        mu_old = self.mu
        lp_old, _ = self._grad_terms(x, mu_old)
        eps = self.clip_eps
        z = self._z.copy()
        m = np.zeros_like(z)
        v = np.zeros_like(z)
        b1, b2, adam_eps = 0.9, 0.999, 1e-8
        n = float(x.shape[0])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for k in range(1, self.update_steps + 1):
                mu, dmu = self._from_z(z)
                lp, dlp = self._grad_terms(x, mu)
                ratio = np.exp(np.minimum(lp - lp_old, 50.0))
                ra = ratio * adv
                active = ra <= np.clip(ratio, 1 - eps, 1 + eps) * adv
                dj_dmu = np.where(active, ra * dlp, 0.0).sum(axis=0) / n
                g = -(dj_dmu * dmu)  # minimise -J
                g = np.where(np.isfinite(g), g, 0.0)
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                mhat = m / (1 - b1**k)
                vhat = v / (1 - b2**k)
                z = z - self.lr * mhat / (np.sqrt(vhat) + adam_eps)
        self._z = z
        self.history.append(
            {
                "step": self.step,
                "mu": mu_old.tolist(),
                "sigma": self.current_sigma,
                "thetas": x.tolist(),
                "rewards": r.tolist(),
                "mean_reward": float(r.mean()),
                "mu_next": self.mu.tolist(),
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
        state.update(
            sigma=self.sigma,
            clip_eps=self.clip_eps,
            lr=self.lr,
            update_steps=self.update_steps,
            baseline=self.baseline,
            include_mean=self.include_mean,
            sigma_decay=self.sigma_decay,
            sigma_min=self.sigma_min,
            z=self._z.tolist(),
            mu0=self.mu0.tolist(),
        )
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


# --------------------------------------------------------------------------- random search
class RandomSearch(_AskTell):
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
        samples_per_step: int = 32,
        seed: Any = None,
        mu0: Any = None,
        sigma: float = 0.2,
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

