"""The search space of a metric surrogate: which curves each metric has (:data:`CURVES`), the
parameter box (:class:`SearchSpace`) and :func:`search_space` (curves per metric:
docs/paper.md#the-surrogate-losses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autoloss_ray.losses.parameterizations import get_parameterization
from autoloss_ray.metrics import METRICS, parse_metric
from autoloss_ray.vocabulary import DEFAULT_PARAMETERIZATION

__all__ = ["CURVES", "metric_curves", "SearchSpace", "search_space"]

CURVES: dict[str, tuple[str, ...]] = {
    "miou": ("and", "or"),
    "fwiou": ("and", "or"),
    "biou": ("and", "or"),
    "macc": ("and",),
    "gacc": ("and",),
    "bf1": ("h1", "h2", "h3", "h4"),
}


def metric_curves(metric: str) -> tuple[tuple[str, str], ...]:
    """``(term, curve)`` of every curve of ``metric`` in theta order, e.g. ``"miou+biou"`` ->
    ``(("miou", "and"), ("miou", "or"), ("biou", "and"), ("biou", "or"))``."""
    return tuple((term, curve) for term in parse_metric(metric) for curve in CURVES[term])


@dataclass(frozen=True, eq=False)
class SearchSpace:
    """The parameters of a metric surrogate: a box [low, high]^dim and the identity start.

    metric: the metric spec ("miou", "miou+biou", ...); parameterization: its name;
    dim: total parameter count; low, high, init: numpy float64 [dim] (+-inf for unbounded
    dims; init = identity curves); names: one per dimension, "<metric>.<curve>.<i>";
    slices: per (metric, curve) the slice of theta it owns.
    """

    metric: str
    parameterization: str
    dim: int
    low: np.ndarray = field(repr=False)
    high: np.ndarray = field(repr=False)
    init: np.ndarray = field(repr=False)
    names: tuple[str, ...] = field(repr=False)
    slices: tuple[tuple[str, str, slice], ...] = field(repr=False, default=())

    def contains(self, theta: Any) -> bool:
        """True when theta is a finite vector of length dim inside the box."""
        try:
            self.validate(theta)
        except (ValueError, TypeError):
            return False
        return True

    def validate(self, theta: Any) -> np.ndarray:
        """theta as a numpy float64 [dim]; ValueError if of wrong length or outside the box."""
        if isinstance(theta, torch.Tensor):
            theta = theta.detach().cpu().numpy()
        try:
            th = np.asarray(theta, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"theta must be a sequence of {self.dim} numbers, got {theta!r}") \
                from exc
        if th.shape != (self.dim,):
            raise ValueError(
                f"theta for {self.metric!r} with the {self.parameterization!r} parameterization "
                f"must have {self.dim} numbers, got {th.size}"
            )
        if not np.all(np.isfinite(th)):
            raise ValueError(f"theta must be finite, got {th.tolist()}")
        bad = np.nonzero((th < self.low) | (th > self.high))[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"theta[{i}] ({self.names[i]}) = {th[i]} is outside its box "
                f"[{self.low[i]}, {self.high[i]}] ({bad.size} value(s) outside)"
            )
        return th


def search_space(metric: str, parameterization: str = DEFAULT_PARAMETERIZATION) -> SearchSpace:
    """The search space of the surrogate of ``metric`` (e.g. "miou" or "miou+biou")."""
    terms = parse_metric(metric)
    par = get_parameterization(parameterization)
    lows, highs, inits, names, slices = [], [], [], [], []
    offset = 0
    for term, curve in metric_curves(metric):
        d = par.dim_per_curve
        lows.append(par.low)
        highs.append(par.high)
        inits.append(par.identity_theta)
        names.extend(f"{term}.{curve}.{i}" for i in range(d))
        slices.append((term, curve, slice(offset, offset + d)))
        offset += d
    cat = lambda xs: np.concatenate(xs).astype(np.float64) if xs else np.zeros(0)  # noqa: E731
    return SearchSpace(
        metric="+".join(terms),
        parameterization=par.name,
        dim=offset,
        low=cat(lows),
        high=cat(highs),
        init=cat(inits),
        names=tuple(names),
        slices=tuple(slices),
    )


assert set(CURVES) == set(METRICS)
