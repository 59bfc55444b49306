"""PPO2's options (issue 29.3) on cheap synthetic objectives, pure numpy (no Ray, seconds).

For every setting (the paper's PPO2, each option alone, all three together; random search as
a floor) and every objective, runs T steps x M samples over several seeds and prints the mean
(+- SE) over seeds of the best valid reward seen and of the reward at the final mean mu_T.
Objectives on [0, 1]^D, maximised: a quadratic bowl (optimum 0 at 0.75; the same at 0.1,
far from mu0, near a corner), a shifted
Rosenbrock (optimum 0 at 0.75), and "failures": exp(bowl) in (0, 1] (a reward like mIoU),
where every sample with theta_0 < 0.3 fails and counts 0.0 (the CLI's default
--failure-reward): the outliers a mean baseline is sensitive to. PPO2 starts at mu0 = 0.5.

    python bench/ppo_options.py [--seeds 10] [--steps 6] [--samples 8] [--dim 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoloss_ray.search import PPO2, RandomSearch  # noqa: E402

SETTINGS = {
    "paper (policy start, R - mean, iid)": {},
    "--startup uniform": dict(startup="uniform"),
    "--advantages rank": dict(advantages="rank"),
    "--mirrored": dict(mirrored=True),
    "all three": dict(startup="uniform", advantages="rank", mirrored=True),
}


def bowl(th: np.ndarray) -> np.ndarray:
    return -((th - 0.75) ** 2).sum(axis=1)


def rosenbrock(th: np.ndarray) -> np.ndarray:
    x = 2.0 * th - 0.5
    return -(100.0 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1.0 - x[:, :-1]) ** 2).sum(axis=1)


def failures(th: np.ndarray) -> np.ndarray:
    """exp(bowl) in (0, 1]; a sample with theta_0 < 0.3 fails and counts 0.0."""
    return np.where(th[:, 0] < 0.3, 0.0, np.exp(bowl(th)))


def failed(f, th: np.ndarray) -> np.ndarray:
    return (th[:, 0] < 0.3) if f is failures else np.zeros(len(th), dtype=bool)


def far_bowl(th: np.ndarray) -> np.ndarray:
    """A bowl whose optimum (0 at 0.1) is far from mu0 = 0.5, near a corner of the box."""
    return -((th - 0.1) ** 2).sum(axis=1)


OBJECTIVES = {"bowl": bowl, "bowl far from mu0 (optimum at 0.1)": far_bowl,
              "rosenbrock": rosenbrock, "failures (0.0 below theta_0=0.3)": failures}


def run(make, f, steps: int) -> tuple[float, float]:
    """(best valid reward, reward at the final mean: NaN without one or when it fails)."""
    opt = make()
    best = -np.inf
    for _ in range(steps):
        th = opt.ask()
        r = f(th)
        ok = ~failed(f, th)
        if ok.any():
            best = max(best, float(r[ok].max()))
        opt.tell(th, r)
    if not isinstance(opt, PPO2):
        return best, np.nan
    mu = np.asarray(opt.mu)[None]
    return best, (np.nan if failed(f, mu)[0] else float(f(mu)[0]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds per setting (default 10)")
    ap.add_argument("--steps", type=int, default=6, help="T, steps (default 6)")
    ap.add_argument("--samples", type=int, default=8, help="M, samples per step (default 8)")
    ap.add_argument("--dim", type=int, default=12, help="D, dimensions (default 12)")
    a = ap.parse_args(argv)
    d, m = a.dim, a.samples
    print(f"T={a.steps} steps x M={m} samples, D={d}, mean +- SE over {a.seeds} seeds")
    print("| objective | setting | best trial | reward at mu_T |")
    print("|---|---|---|---|")
    for oname, f in OBJECTIVES.items():
        for label, kw in [*SETTINGS.items(), ("random search", None)]:
            out = []
            for s in range(a.seeds):
                if kw is None:
                    def make(s=s):
                        return RandomSearch(low=np.zeros(d), high=np.ones(d),
                                            samples_per_step=m, seed=s)
                else:
                    def make(s=s, kw=kw):
                        return PPO2(low=np.zeros(d), high=np.ones(d), mu0=np.full(d, 0.5),
                                    samples_per_step=m, seed=s, **kw)
                out.append(run(make, f, a.steps))
            best = np.array([o[0] for o in out])
            fin = np.array([o[1] for o in out])
            se = best.std(ddof=1) / np.sqrt(len(best))
            ok = fin[~np.isnan(fin)]
            fin_s = "-" if not ok.size else (
                f"{ok.mean():.4f} +- {ok.std(ddof=1) / np.sqrt(ok.size):.4f}"
                + (f" ({len(fin) - ok.size} failed)" if ok.size < len(fin) else ""))
            print(f"| {oname} | {label} | {best.mean():.4f} +- {se:.4f} | {fin_s} |")


if __name__ == "__main__":
    main()
