"""Independent truncated normals on a box: sampling, log-density and the log-mass helpers.

The policy of PPO2 (:mod:`autoloss_ray.search.ppo`) is one truncated normal per dimension; its
update needs ``log Z = log(Phi(beta) - Phi(alpha))`` accurately in both tails, so the helpers
work in log space (``scipy.special.log_ndtr``, ``ndtri_exp``). Pure numpy/scipy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

__all__ = ["TruncatedNormal", "as_box", "log_mass", "log_phi", "log_prob_and_grad"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def as_box(low: Any, high: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a box ``[low, high]``. Returns (low [D], high [D]) as float64 copies;
    infinite bounds are allowed, NaN, an empty or an inverted box are a ValueError."""
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
    """log(1 - exp(d)) elementwise for d <= 0 (any shape), accurate in both regimes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def log_mass(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """log(Phi(beta) - Phi(alpha)) for alpha < beta (standardised bounds, may be infinite);
    broadcasting shapes, e.g. [D] -> [D]."""
    flip = alpha > 0  # both bounds in the upper tail: use the mirror image for accuracy
    lo = np.where(flip, -beta, alpha)
    hi = np.where(flip, -alpha, beta)
    lhi = special.log_ndtr(hi)
    llo = special.log_ndtr(lo)
    return lhi + _log1mexp(llo - lhi)


def log_phi(z: np.ndarray) -> np.ndarray:
    """log of the standard normal density, elementwise (any shape); -inf at +-inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        return -0.5 * z * z - _LOG_SQRT_2PI


class TruncatedNormal:
    """Independent truncated normals on the box ``[low, high]`` (D dimensions).

    Infinite bounds are allowed; a dimension with both bounds infinite is a plain normal.
    ``mu`` and ``sigma`` broadcast against ``[D]``; ``mu`` may lie outside the box.
    """

    def __init__(self, low: Any, high: Any) -> None:
        self.low, self.high = as_box(low, high)

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

    def sample(self, mu: Any, sigma: Any, size: int, rng: np.random.Generator, *,
               mirrored: bool = False) -> np.ndarray:
        """Draw ``size`` samples -> array [size, D], every entry inside the box.

        Inverse-CDF sampling in log space (``ndtri_exp``), mirrored when the box lies in the
        upper tail, so it stays exact however far mu is from the box.

        ``mirrored``: antithetic pairs. Rows 2j and 2j+1 use the quantiles u and 1 - u of the
        truncated normal (the standard-normal noise Phi^-1(q) of one is minus the other's;
        with an odd ``size`` the last row is unpaired). Each row is still drawn from the
        truncated normal, so its log-density (:meth:`log_prob`) is exact; only the pairs are
        dependent. ``rng`` gives ceil(size / 2) rows of uniforms.
        """
        mu, sigma = self._standardise(mu, sigma)
        if not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"size must be a non-negative int; got {size!r}")
        alpha = (self.low - mu) / sigma
        beta = (self.high - mu) / sigma
        flip = alpha > 0
        a = np.where(flip, -beta, alpha)  # after mirroring a <= 0
        b = np.where(flip, -alpha, beta)
        if mirrored:
            half = rng.random(((int(size) + 1) // 2, self.dim))
            u = np.empty((2 * half.shape[0], self.dim))
            u[0::2], u[1::2] = half, 1.0 - half
            u = u[: int(size)]
        else:
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
        out = log_phi(z) - np.log(sigma) - log_mass(alpha, beta)
        inside = (x >= self.low) & (x <= self.high)
        return np.where(inside, out, -np.inf)

    def __repr__(self) -> str:
        return f"TruncatedNormal(low={self.low.tolist()}, high={self.high.tolist()})"


def log_prob_and_grad(
    x: np.ndarray, mu: np.ndarray, *, low: np.ndarray, high: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log-density of samples under the truncated normals and its derivative wrt the mean.

    Args:
        x: samples [M, D], inside the box. mu: means [D]. low, high: the box [D] (infinite
            bounds allowed). scale: the normals' scales [D], > 0.

    Returns:
        (log p(x | mu) [M, D], d log p(x | mu) / d mu [M, D]), per dimension, using
        ``d log Z / d mu = (phi(alpha) - phi(beta)) / (scale Z)`` with ``phi(+-inf) = 0``.
    """
    s = scale
    alpha = (low - mu) / s
    beta = (high - mu) / s
    logz = log_mass(alpha, beta)
    z = (x - mu) / s
    logp = log_phi(z) - np.log(s) - logz
    pa = np.exp(log_phi(alpha) - logz)
    pb = np.exp(log_phi(beta) - logz)
    pa = np.where(np.isfinite(alpha), pa, 0.0)
    pb = np.where(np.isfinite(beta), pb, 0.0)
    dlogp = z / s - (pa - pb) / s
    return logp, dlogp
