"""Multi-fidelity in a step: where the samples a scheduler stopped early are told (pure).

A scheduler such as ASHA stops a trial at a rung; its value is that rung's reward, on another
scale than a finished trial's. :func:`stopped_below` places such samples below every survivor
of their step (survivors: neither stopped nor failed), in the order of their rung values.
:class:`~autoloss_ray.search.step_protocol.StepProtocol` tells the optimizer these rewards (an
optimizer that says ``ranks_stopped``, PPO2, gets the mask too and learns the step by rank).
Shapes: per-sample arrays [M].
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["stopped_below"]


def stopped_below(rewards: np.ndarray, stopped: np.ndarray, failed: np.ndarray | None = None,
                  *, floor: float | None = None) -> np.ndarray:
    """Rewards [M] (higher is better) with the ``stopped`` [M] samples moved below every
    survivor (neither stopped nor ``failed`` [M]), keeping their order among themselves.

    With S stopped samples and survivors' rewards spanning ``[lo, hi]`` (d = hi - lo, or 1.0
    when they are equal), the j-th worst stopped sample (j = 0..S-1, ties by sample index) gets
    ``lo - d * (S - j) / S``: the best stopped one sits d / S below the worst survivor.
    Without survivors, ``floor`` (e.g. the worst finished value seen) takes ``lo``'s place
    (d = 1.0); without either the rewards are returned unchanged. Failed samples keep their
    reward. Pure; returns a new array [M].
    """
    r = np.asarray(rewards, dtype=np.float64).copy()
    stop = np.asarray(stopped, dtype=bool)
    if r.shape != stop.shape or r.ndim != 1:
        raise ValueError(f"rewards and stopped must be arrays of the same shape (M,); got "
                         f"{r.shape} and {stop.shape}")
    bad = np.zeros_like(stop) if failed is None else np.asarray(failed, dtype=bool)
    stop = stop & ~bad
    if not stop.any():
        return r
    survivors = r[~stop & ~bad]
    if survivors.size:
        lo, d = float(survivors.min()), float(survivors.max() - survivors.min())
    elif floor is not None and math.isfinite(floor):
        lo, d = float(floor), 0.0
    else:
        return r
    d = d if d > 0 else 1.0
    idx = np.flatnonzero(stop)
    order = idx[np.lexsort((idx, r[idx]))]  # worst first; ties by sample index
    n = idx.size
    for j, i in enumerate(order):
        r[i] = lo - d * (n - j) / n
    return r
