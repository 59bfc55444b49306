"""Plots of an experiment (matplotlib's Agg canvas, no pyplot; no ray): reward per search
step (:func:`plot_search_curves`, the paper's Fig. 3 layout) and the searched curves h(x) of a
theta next to the identity (:func:`plot_curves`). Each writes a PNG and returns its path."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["plot_search_curves", "curve_groups", "plot_curves"]


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike[str]) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return str(path)


def plot_search_curves(
    runs: Mapping[str, pd.DataFrame],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    ylabel: str = "reward",
) -> str:
    """Plot mean (solid) and max (dashed) reward per step for each run.

    ``runs``: name -> a :func:`step_stats` frame (step, mean_reward, max_reward), e.g.
    ``{"PPO2": step_stats(trials=t1), "random": step_stats(trials=t2)}``. Returns ``path``.
    """
    if not runs:
        raise ValueError("plot_search_curves: give at least one run")
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    plotted = 0
    for i, (name, st) in enumerate(runs.items()):
        if st is None or st.empty:
            continue
        c = colors[i % len(colors)]
        steps = st["step"].to_numpy(dtype=float)
        ax.plot(steps, st["mean_reward"].to_numpy(dtype=float), "-o", color=c, ms=4,
                label=f"{name}: mean")
        ax.plot(steps, st["max_reward"].to_numpy(dtype=float), "--^", color=c, ms=4,
                label=f"{name}: max")
        plotted += 1
    if not plotted:
        raise ValueError("plot_search_curves: every run is empty (no finished steps)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("search step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


# ----------------------------------------------------------------------------- h(x) curves
def _metric_curves(metric: str) -> tuple[tuple[str, str], ...]:
    """``(term, curve)`` per curve of ``metric``: the library's one table (``losses.space``),
    imported on use so that reading a report needs no torch."""
    from autoloss_ray.losses.space import metric_curves

    return metric_curves(metric)


def curve_groups(metric: str, dim_per_curve: int, theta_len: int) -> list[tuple[str, slice]]:
    """Names and theta slices of the curves of ``metric`` (e.g. ``"miou+biou"`` ->
    [("miou.and", 0:6), ("miou.or", 6:12), ("biou.and", ...), ...])."""
    names = [f"{term}.{curve}" for term, curve in _metric_curves(metric)]
    if dim_per_curve * len(names) != theta_len:
        raise ValueError(
            f"theta has {theta_len} values but {metric} has {len(names)} curves of "
            f"{dim_per_curve} parameters ({len(names) * dim_per_curve} expected)"
        )
    return [(n, slice(i * dim_per_curve, (i + 1) * dim_per_curve)) for i, n in enumerate(names)]


def plot_curves(
    metric: str,
    parameterization: str,
    theta: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    get_parameterization: Callable[[str], Any] | None = None,
    points: int = 201,
) -> str:
    """Plot each searched curve h(x) of ``theta`` (one panel per curve) with the identity.

    Uses ``autoloss_ray.losses.parameterizations.get_parameterization(parameterization)`` (its
    ``dim_per_curve`` and ``curve(theta_curve, x)``). Returns ``path``.
    """
    import torch

    if get_parameterization is None:
        from autoloss_ray.losses.parameterizations import get_parameterization
    par = get_parameterization(parameterization)
    theta = np.array(theta, dtype=np.float64).ravel()  # a writable copy for torch
    d = int(par.dim_per_curve)
    if d == 0:
        groups = [(f"{t}.{c}", slice(0, 0)) for t, c in _metric_curves(metric)]
    else:
        groups = curve_groups(metric, d, theta.size)
    x = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    n = len(groups)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = _figure(3.0 * ncols, 3.0 * nrows)
    for i, (name, sl) in enumerate(groups):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        th = torch.as_tensor(theta[sl], dtype=torch.float64)
        with torch.no_grad():
            y = par.curve(th, x)
        y = torch.as_tensor(y).detach().to(torch.float64).cpu().numpy()
        ax.plot(x.numpy(), x.numpy(), ":", color="gray", label="identity")
        ax.plot(x.numpy(), y, "-", color="tab:blue", lw=2, label="searched")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
