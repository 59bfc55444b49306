"""One PPO2 update of the policy mean, and the centred ranks (numpy/scipy; no ray).

The math of :class:`~autoloss_ray.search.ppo.PPO2`'s update, apart from the optimizer's state,
sampling and bookkeeping: :func:`ppo_update` maximises the clipped PPO objective of one step's
samples over the unconstrained parameters of the mean (:class:`MeanParameterization`) by its
analytic gradient with Adam (:func:`adam_step`, a fresh state per update) and returns the new
parameters with CleanRL's diagnostics (:class:`PPOUpdate`); :func:`centred_ranks` are the
rewards' centred ranks (PPO2's rank advantages). The objective and the conventions are in
:mod:`autoloss_ray.search.ppo`'s docstring. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoloss_ray.search._mean_param import MeanParameterization
from autoloss_ray.search.truncnorm import log_prob_and_grad

__all__ = ["PPOUpdate", "ppo_update", "adam_step", "centred_ranks"]

# Adam's constants (Kingma & Ba): beta1, beta2, epsilon
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8
# log ratios are capped here before exp (a sample far in the new tail must not overflow)
_MAX_LOG_RATIO = 50.0


@dataclass(frozen=True)
class PPOUpdate:
    """What one PPO2 update returns.

    z: the mean's unconstrained parameters after the update [D].
    clip_fraction: the fraction of ratios r_id outside [1 - eps, 1 + eps], averaged over the
        epochs (CleanRL's ``clipfrac``).
    approx_kl: CleanRL's ``approx_kl`` = mean((r - 1) - log r) over the ratios of the last
        epoch (an estimate of KL(pi_old || pi) >= 0).
    """

    z: np.ndarray
    clip_fraction: float
    approx_kl: float


def adam_step(
    z: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, k: int, *, lr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam step (minimising) at step number k >= 1: returns (z, m, v), all [D]."""
    m = _ADAM_B1 * m + (1 - _ADAM_B1) * grad
    v = _ADAM_B2 * v + (1 - _ADAM_B2) * grad * grad
    m_hat = m / (1 - _ADAM_B1**k)
    v_hat = v / (1 - _ADAM_B2**k)
    z = z - lr * m_hat / (np.sqrt(v_hat) + _ADAM_EPS)
    return z, m, v


def ppo_update(
    *,
    thetas: np.ndarray,
    advantages: np.ndarray,
    z_old: np.ndarray,
    param: MeanParameterization,
    low: np.ndarray,
    high: np.ndarray,
    scale: np.ndarray,
    clip_eps: float,
    lr: float,
    update_steps: int,
) -> PPOUpdate:
    """One PPO2 update of the policy mean: maximise the clipped surrogate objective

        J(mu) = sum_d mean_i min(r_id A_i, clip(r_id, 1 - eps, 1 + eps) A_i),
        r_id = pi(x_id | mu_d) / pi_old(x_id | mu_old_d),

    by ``update_steps`` epochs of Adam (a fresh state) on z, the unconstrained parameters of
    mu (``param``). The gradient is analytic: where the unclipped term is the minimum,
    dJ/dmu_d = mean_i r_id A_i d log pi(x_id)/dmu_d; elsewhere the clipped term is flat.

    Args:
        thetas: the step's samples x [M, D], drawn from pi_old. advantages: A [M].
        z_old: parameters of the mean that drew them [D]. param: mu <-> z on the box.
        low, high: the box [D]. scale: the policy scale [D]. clip_eps: eps in (0, 1).
        lr: Adam's learning rate. update_steps: the number of epochs (Adam steps).

    Returns:
        :class:`PPOUpdate` with the new z [D] and the diagnostics CleanRL logs.
    """
    if update_steps < 1:
        raise ValueError(f"update_steps must be an int >= 1; got {update_steps!r}")
    x = thetas
    A = advantages[:, None]  # [M, 1]
    eps = clip_eps
    n = float(x.shape[0])
    mu_old = np.clip(param.from_z(z_old)[0], low, high)
    log_pi_old, _ = log_prob_and_grad(x, mu_old, low=low, high=high, scale=scale)
    z = z_old.copy()
    m = np.zeros_like(z)  # Adam's first and second moments
    v = np.zeros_like(z)
    n_clipped = 0  # ratios outside [1 - eps, 1 + eps], summed over the epochs
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for k in range(1, update_steps + 1):
            mu, dmu_dz = param.from_z(z)
            log_pi, dlog_pi_dmu = log_prob_and_grad(x, mu, low=low, high=high, scale=scale)
            log_r = np.minimum(log_pi - log_pi_old, _MAX_LOG_RATIO)
            r = np.exp(log_r)  # [M, D]
            rA = r * A
            unclipped_is_min = rA <= np.clip(r, 1 - eps, 1 + eps) * A
            dJ_dmu = np.where(unclipped_is_min, rA * dlog_pi_dmu, 0.0).sum(axis=0) / n
            grad = -(dJ_dmu * dmu_dz)  # Adam minimises -J
            grad = np.where(np.isfinite(grad), grad, 0.0)
            z, m, v = adam_step(z, grad, m, v, k, lr=lr)
            n_clipped += int(np.count_nonzero(np.abs(r - 1.0) > eps))
        approx_kl = float(np.mean((r - 1.0) - log_r))  # the last epoch's ratios
    clip_fraction = n_clipped / (update_steps * r.size)
    return PPOUpdate(z=z, clip_fraction=clip_fraction, approx_kl=approx_kl)


def centred_ranks(rewards: np.ndarray) -> np.ndarray:
    """Ranks of ``rewards`` [M] scaled to [-1/2, 1/2]: (rank - 1) / (M - 1) - 1/2 with
    rank 1 the lowest; tied rewards share their mean rank. Returns [M] (sums to 0)."""
    from scipy.stats import rankdata

    r = np.asarray(rewards, dtype=np.float64)
    return (rankdata(r) - 1.0) / (r.size - 1) - 0.5

