"""Paired statistics of the pre-registered searcher comparison (``bench/search_quality.py``).

Pure functions over per-seed paired differences ``d[s] = score(arm, s) - score(ref, s)``
(the same seed = the same data subset, hold-out split and training seed for every arm):
mean +- SE, a two-sided paired t-test, wins out of seeds, the smallest difference the run
could detect (power 0.8 at alpha 0.05), Holm's correction over several comparisons, and the
decision rule written down before the run (:func:`decide`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ALPHA = 0.05  # two-sided, family-wise (Holm) over the comparisons with the reference arm
POWER = 0.8  # for the smallest detectable difference


def _clean(diffs: Sequence[float]) -> np.ndarray:
    d = np.asarray([float(x) for x in diffs], dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"paired differences must be a flat sequence, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("paired differences must be finite numbers (a seed with a failed "
                         f"re-training is not a complete pair); got {d.tolist()}")
    return d


def detectable_difference(sd: float, n: int, *, alpha: float = ALPHA,
                          power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired t-test over ``n`` pairs with
    difference std ``sd`` detects with probability ``power`` at level ``alpha``.

    Solved exactly on the noncentral t distribution (df = n - 1, noncentrality
    ``delta * sqrt(n) / sd``); NaN for ``n < 2`` or ``sd`` not finite, 0.0 for ``sd == 0``.
    """
    from scipy import optimize, stats

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def power_at(delta: float) -> float:
        nc = delta * math.sqrt(n) / sd
        # the wrong-sign tail: at most alpha / 2 and falling with nc; scipy's nct.cdf answers
        # NaN far out in it (df = 1-2, nc ~ 50: seen with 2 seeds), where it is 0 to double
        # precision
        lower = float(stats.nct.cdf(-crit, df, nc))
        return float(stats.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)

    hi = sd
    while power_at(hi) < power:
        hi *= 2
    return float(optimize.brentq(lambda x: power_at(x) - power, 0.0, hi, xtol=1e-12))


def paired_summary(diffs: Sequence[float]) -> dict[str, float]:
    """``{n, mean, sd, se, t, p, wins, losses, ties, detectable}`` of paired differences [n].

    ``p``: two-sided one-sample t-test of mean 0 (= scipy's paired ``ttest_rel``); NaN with
    fewer than 2 pairs or zero spread. ``wins``: differences > 0.
    """
    from scipy import stats

    d = _clean(diffs)
    n = int(d.size)
    out: dict[str, float] = {"n": n, "mean": math.nan, "sd": math.nan, "se": math.nan,
                             "t": math.nan, "p": math.nan, "wins": int((d > 0).sum()),
                             "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
                             "detectable": math.nan}
    if n == 0:
        return out
    out["mean"] = float(d.mean())
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    out.update(sd=sd, se=sd / math.sqrt(n), detectable=detectable_difference(sd, n))
    if sd > 0:
        res = stats.ttest_1samp(d, 0.0)
        out.update(t=float(res.statistic), p=float(res.pvalue))
    return out


def holm(pvalues: Mapping[str, float], *, alpha: float = ALPHA) -> dict[str, dict[str, Any]]:
    """Holm's step-down correction: ``{name: {"p_adj", "reject"}}`` over ``pvalues``.

    ``p_adj`` = the running max of ``(m - i) * p_(i)`` (clipped at 1) in ascending order of p;
    a NaN p is never rejected and does not count among the m hypotheses.
    """
    finite = sorted(((p, k) for k, p in pvalues.items() if math.isfinite(p)))
    m = len(finite)
    out: dict[str, dict[str, Any]] = {k: {"p_adj": math.nan, "reject": False}
                                      for k, p in pvalues.items() if not math.isfinite(p)}
    running = 0.0
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = {"p_adj": running, "reject": running < alpha}
    return out


def decide(scores: Mapping[str, Sequence[float]], *, reference: str,
           alpha: float = ALPHA) -> dict[str, Any]:
    """The pre-registered decision over per-seed scores ``{arm: [score of seed 0, ...]}``
    (every arm the same seeds in the same order).

    Each other arm is compared with ``reference`` by the paired t-test of
    :func:`paired_summary`, Holm-corrected over those comparisons at ``alpha``. The winner
    is the arm significantly *better* than the reference with the largest mean difference;
    None (the reference stays) when no arm is. Returns ``{"reference", "comparisons":
    {arm: summary + p_adj + reject}, "winner", "better", "worse"}``.
    """
    if reference not in scores:
        raise ValueError(f"the reference arm {reference!r} has no scores; arms: {sorted(scores)}")
    ref = _clean(scores[reference])
    comps: dict[str, dict[str, Any]] = {}
    for arm, values in scores.items():
        if arm == reference:
            continue
        v = _clean(values)
        if v.shape != ref.shape:
            raise ValueError(f"arm {arm!r} has {v.size} seed score(s), the reference "
                             f"{reference!r} {ref.size}: the comparison needs complete pairs")
        comps[arm] = paired_summary(v - ref)
    adj = holm({arm: c["p"] for arm, c in comps.items()}, alpha=alpha)
    for arm, c in comps.items():
        c.update(adj[arm])
    better = [a for a, c in comps.items() if c["reject"] and c["mean"] > 0]
    worse = [a for a, c in comps.items() if c["reject"] and c["mean"] < 0]
    winner = max(better, key=lambda a: comps[a]["mean"]) if better else None
    return {"reference": reference, "comparisons": comps, "winner": winner,
            "better": better, "worse": worse}
