"""Ray's convergence protocol (tune/tests/test_convergence.py) for our searchers, without Ray.

One trial at a time; ExperimentPlateauStopper(top=3, patience=20, std=0.001) sees every result;
at most 100 trials; loss = sum(x_i^2). Prints, per setting, how many seeds stopped by plateau,
the median number of trials and the median of max|x_i| of the best point.

    python bench/searcher_convergence.py [seeds]
"""

from __future__ import annotations

import math
import sys

import numpy as np
from ray import tune
from ray.tune.search import Searcher
from ray.tune.stopper import ExperimentPlateauStopper

from searchers import PPO2Searcher, RandomSearcher


def plateau_run(searcher, dim: int, budget: int = 100):
    stopper = ExperimentPlateauStopper("loss", top=3, patience=20, mode="min")
    best = (math.inf, None)
    for n in range(budget):
        c = searcher.suggest(f"t{n}")
        if c is None or c == Searcher.FINISHED:
            return n, False, best[1]
        x = np.array([c[f"x{i}"] for i in range(dim)])
        loss = float(np.sum(x**2))
        best = min(best, (loss, x), key=lambda b: b[0])
        searcher.on_trial_complete(f"t{n}", {"loss": loss, "done": True})
        if stopper(f"t{n}", {"loss": loss}):
            return n + 1, True, best[1]
    return budget, False, best[1]


def main(seeds: int = 20) -> None:
    settings = {
        "PPO2 sigma 0.2 (fixed)": dict(cls=PPO2Searcher),
        "PPO2 sigma_decay 0.6": dict(cls=PPO2Searcher, sigma_decay=0.6),
        "RandomSearcher": dict(cls=RandomSearcher),
    }
    print("| space | searcher (M=8, T=12) | plateau | median trials | median max abs x* |")
    print("|---|---|---|---|---|")
    for label, lo, hi, dim in [("x in [0, 20] (Ray's)", 0, 20, 1), ("x in [-2, 2]", -2, 2, 1),
                               ("4-D, each in [-2, 2]", -2, 2, 4)]:
        space = {f"x{i}": tune.uniform(lo, hi) for i in range(dim)}
        for name, kw in settings.items():
            kw = dict(kw)
            cls = kw.pop("cls")
            outs = [plateau_run(cls(space, metric="loss", mode="min", steps=12,
                                    samples_per_step=8, seed=s, **kw), dim)
                    for s in range(seeds)]
            print(f"| {label} | {name} | {sum(o[1] for o in outs)}/{seeds} | "
                  f"{np.median([o[0] for o in outs]):.0f} | "
                  f"{np.median([np.abs(o[2]).max() for o in outs]):.3g} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
