"""The report of the pre-registered searcher comparison (``bench/search_quality.py``): the
plan's arms and seeds, and ``table.md``, ``results.json``, ``paired.png`` and
``best_so_far.png`` built from the finished seeds' files (``<out>/seeds/seed-N.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from paired_stats import ALPHA, decide

PLAN_SEEDS = "100,101,102,103,104"  # new seeds: 0-2 ran the earlier, unpaired comparison
REFERENCE = "ppo"

# search name -> (searcher, scheduler, steps multiplier)
SEARCHES: dict[str, tuple[str, str, int]] = {
    "ppo": ("ppo", "fifo", 1),
    "random": ("random", "fifo", 1),
    "tpe": ("tpe", "fifo", 1),
    "ppo-asha": ("ppo", "asha", 2),
}
# arm -> (search, answer rule); the order of the tables
ARMS: dict[str, tuple[str, str]] = {
    "ppo": ("ppo", "best-trial"),
    "ppo-paper": ("ppo", "policy-mean"),
    "random": ("random", "best-trial"),
    "tpe": ("tpe", "best-trial"),
    "ppo-asha": ("ppo-asha", "best-trial"),
}


def best_so_far(rewards: list[float]) -> np.ndarray:
    """Running max of ``rewards`` [N] (NaN = failed, skipped; NaN until the first success)."""
    out, best = np.full(len(rewards), np.nan), -math.inf
    for i, r in enumerate(rewards):
        if r is not None and math.isfinite(r):
            best = max(best, r)
        out[i] = best if math.isfinite(best) else np.nan
    return out


def report(out: Path, *, metric: str = "miou") -> dict[str, Any] | None:
    """table.md, results.json, paired.png and best_so_far.png from ``out/seeds/*.json``."""
    files = sorted((out / "seeds").glob("seed-*.json"))
    if not files:
        print(f"[bench] no finished seed in {out / 'seeds'}", flush=True)
        return None
    seeds = [json.loads(f.read_text()) for f in files]
    seeds = [s for s in seeds if all(math.isfinite(s["arms"][a]["val_score"]) for a in ARMS)]
    scores = {arm: [s["arms"][arm]["val_score"] for s in seeds] for arm in ARMS}
    decision = decide(scores, reference=REFERENCE)
    n = len(seeds)
    lines = [f"**Per seed**: CamVid val {metric} of each arm's answer, re-trained on all of "
             "CamVid train (mean of the fresh training seeds)", "",
             "| seed | " + " | ".join(ARMS) + " |", "|---" * (len(ARMS) + 1) + "|"]
    for s in seeds:
        lines.append(f"| {s['seed']} | " + " | ".join(
            f"{s['arms'][a]['val_score']:.4f}" for a in ARMS) + " |")
    lines.append("| mean | " + " | ".join(f"{np.mean(scores[a]):.4f}" for a in ARMS) + " |")
    lines += ["", f"**Paired against `{REFERENCE}`** ({n} seed(s); difference = arm - "
              f"{REFERENCE}; Holm over {len(ARMS) - 1} comparisons at {ALPHA})", "",
              "| arm | mean diff | SE | t | p | p (Holm) | wins | detectable (80 % power) |",
              "|---|---|---|---|---|---|---|---|"]
    for arm, c in decision["comparisons"].items():
        lines.append(f"| {arm} | {c['mean']:+.4f} | {c['se']:.4f} | {c['t']:.2f} | "
                     f"{c['p']:.3f} | {c['p_adj']:.3f} | {c['wins']}/{c['n']} | "
                     f"{c['detectable']:.4f} |")
    compute = {a: np.mean([s["arms"][a]["compute"] for s in seeds]) for a in ARMS}
    trials = {a: np.mean([s["arms"][a]["trials"] for s in seeds]) for a in ARMS}
    lines += ["", "Compute per search (training iterations, mean over seeds): " + ", ".join(
        f"{a} {compute[a]:.0f} ({trials[a]:.1f} trials)" for a in ARMS) + "."]
    if decision["winner"]:
        verdict = (f"`{decision['winner']}` is significantly better than `{REFERENCE}`: "
                   "by the pre-registered rule it becomes the default.")
    else:
        best = max(ARMS, key=lambda a: np.mean(scores[a]))
        verdict = (f"No arm is significantly better than `{REFERENCE}` after Holm's "
                   f"correction: by the pre-registered rule the defaults stay. Best mean: "
                   f"`{best}`.")
    if decision["worse"]:
        verdict += (" Significantly worse than the reference: "
                    + ", ".join(f"`{a}`" for a in decision["worse"]) + ".")
    planned = len(PLAN_SEEDS.split(","))
    if n < planned:
        lines += ["", f"**Interim** ({n} of the plan's {planned} seeds): no decision before "
                  f"all {planned} (the rule applied now would read: {verdict})"]
    else:
        lines += ["", f"**Decision** ({n} seeds): {verdict}"]
    md = "\n".join(lines) + "\n"
    print(md, flush=True)
    (out / "table.md").write_text(md)
    (out / "results.json").write_text(json.dumps(
        {"seeds": seeds, "scores": scores, "decision": decision}, indent=1, default=float))
    plot_paired(decision, scores, out / "paired.png", metric=metric)
    plot_best_so_far(seeds, out / "best_so_far.png", metric=metric)
    return decision


def plot_paired(decision: dict[str, Any], scores: dict[str, list[float]], path: Path, *,
                metric: str) -> None:
    """Per-seed paired differences (dots) with mean +- SE, one row per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = decision["comparisons"]
    fig, ax = plt.subplots(figsize=(6.4, 0.7 * len(comps) + 1.4), dpi=120)
    ref = np.asarray(scores[decision["reference"]])
    for i, (arm, c) in enumerate(comps.items()):
        d = np.asarray(scores[arm]) - ref
        ax.scatter(d, np.full(d.size, i), color="0.4", s=18, zorder=3)
        ax.errorbar(c["mean"], i, xerr=c["se"] if math.isfinite(c["se"]) else None, fmt="D",
                    color="C3" if c["reject"] else "C0", capsize=4, zorder=4)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(comps)), list(comps))
    ax.set_xlabel(f"val {metric}: arm - {decision['reference']} (per seed; mean ± SE)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("paired differences against the shipped default")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_best_so_far(seeds: list[dict[str, Any]], path: Path, *, metric: str) -> None:
    """Best-so-far hold-out reward against training iterations spent, per search (mean over
    seeds, on a common grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = seeds[0]["budget_iterations"]
    grid = np.linspace(0, budget, 97)[1:]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for search in SEARCHES:
        curves = []
        for s in seeds:
            r = s["searches"][search]
            cum = np.cumsum(r["compute"])
            bsf = best_so_far(r["rewards"])
            idx = np.searchsorted(cum, grid, side="right") - 1
            curves.append(np.where(idx >= 0, bsf[np.clip(idx, 0, None)], np.nan))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(grid, np.nanmean(np.asarray(curves), axis=0), lw=2, label=search)
    ax.set_xlabel("training iterations spent by the search")
    ax.set_ylabel(f"best hold-out {metric} so far")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"search progress (mean over {len(seeds)} seed(s))")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
