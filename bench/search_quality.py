"""Does the search pay? PPO2 against random, TPE and CMA-ES on the CamVid proxy (not a test).

Every searcher gets the same budget (``--steps`` x ``--samples`` trials), the same box, the
same start (the space's init: PPO2's mu0, TPE's / CMA-ES's first trial) and the same proxy
task (the README's CamVid proxy by default: tiny network, 96x96, 80 iterations, reward =
hold-out mIoU on 25 % of a 192-image subset of CamVid train), once per seed. The seed of a
replicate is the search's ``--seed``: the searcher's sampling seed, the data subset / hold-out
split, and (common random numbers, ``--crn``) the training seed every trial of the search
shares. Printed per searcher, mean and spread (std, min..max) over seeds:

* best-so-far reward after k trials (trials in proposal order, step by step);
* the reward of the recommended theta (what ``autoloss export`` writes: the search's
  ``--answer``, default the best trial for every searcher; ``--answer legacy``: the rule of
  the README's recorded run, PPO2 the mu of the step with the best mean reward, the others
  the best trial) re-trained with ``--fresh`` training seeds never used by the search, on
  the same hold-out;

and the reward noise: the start theta trained with ``--noise-seeds`` training seeds (std).
Writes ``results.json``, ``table.md`` and ``best_so_far.png`` (one line per searcher, mean
over seeds, band = min..max) under ``--out``; searches land in ``<out>/store`` and a rerun
of the same command resumes / skips what is already there.

Full run (the coordinator's): ``bash bench/search_quality.sh``. A smoke run:
``python bench/search_quality.py --searchers ppo,tpe --seeds 2 --steps 2 --samples 2
--iterations 10 --fresh 1 --noise-seeds 2 --out runs/sq-smoke``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoloss_app.options import SEARCHERS, SearchOptions  # noqa: E402

FRESH_SEED0 = 10_000  # fresh training seeds: 10000, 10001, ... (the searches use 0..seeds-1)


def best_so_far(rewards: list[float]) -> np.ndarray:
    """Running max of ``rewards`` [N] (NaN = failed, skipped; NaN until the first success)."""
    out, best = np.full(len(rewards), np.nan), -math.inf
    for i, r in enumerate(rewards):
        if r is not None and math.isfinite(r):
            best = max(best, r)
        out[i] = best if math.isfinite(best) else np.nan
    return out


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not v.size:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def _fmt(s: dict[str, float]) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def _options(args, searcher: str, seed: int) -> SearchOptions:
    return SearchOptions(
        metric=args.metric, searcher=searcher, dataset=args.dataset, data_root=args.data_root,
        image_size=args.image_size, iterations=args.iterations, batch_size=args.batch_size,
        steps=args.steps, samples=args.samples, seed=seed, crn=not args.no_crn,
        store=str(Path(args.out).resolve() / "store"),
        tune_dir=str(Path(args.out).resolve() / "tune"),
        experiment=f"{searcher}-seed{seed}", verbose=0, gpus_per_trial=0,
        answer=None if args.answer == "legacy" else args.answer,
    )


def _run_trials(configs: list[dict[str, Any]]) -> list[float]:
    """Rewards of trial configs, run as Ray tasks (one CPU each, in parallel)."""
    import ray

    from autoloss_ray.train import run_trial

    @ray.remote(num_cpus=1)
    def one(cfg):
        import torch

        torch.set_num_threads(1)  # as a Tune trial with one CPU runs
        try:
            r = run_trial(cfg)
            return float(r["reward"]) if r.get("status") == "ok" else math.nan
        except Exception:  # noqa: BLE001 - a failed re-evaluation counts as NaN
            return math.nan

    return ray.get([one.remote(c) for c in configs])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--searchers", default=",".join(SEARCHERS),
                   help=f"comma-separated, of {', '.join(SEARCHERS)} (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="replicates: seeds 0..N-1 (3)")
    p.add_argument("--steps", type=int, default=6, help="T (6)")
    p.add_argument("--samples", type=int, default=8, help="M (8): budget T*M trials")
    p.add_argument("--checkpoints", default="8,16,32,48",
                   help="trial counts at which best-so-far is tabled (those <= T*M)")
    p.add_argument("--fresh", type=int, default=2, help="fresh training seeds per "
                   "recommended theta (2)")
    p.add_argument("--noise-seeds", type=int, default=3,
                   help="training seeds of the start theta for the reward noise (3)")
    p.add_argument("--metric", default="miou")
    p.add_argument("--dataset", default="camvid")
    p.add_argument("--data-root", default="../shared/data/camvid")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--iterations", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-crn", action="store_true", help="searches with --no-crn")
    p.add_argument("--answer", default="best-trial",
                   choices=["best-trial", "playoff", "policy-mean", "legacy"],
                   help="the searches' answer rule (autoloss search --answer; default "
                   "best-trial); legacy: PPO2 its policy mean, the others their best trial "
                   "(the rule of the README's recorded run)")
    p.add_argument("--num-cpus", type=int, default=None, help="Ray CPUs (default: all)")
    p.add_argument("--out", default="runs/search-quality")
    args = p.parse_args(argv)
    searchers = [s.strip() for s in args.searchers.split(",") if s.strip()]
    bad = [s for s in searchers if s not in SEARCHERS]
    if bad or not searchers:
        p.error(f"--searchers must name some of {', '.join(SEARCHERS)}; got {args.searchers!r}")
    budget = args.steps * args.samples
    checkpoints = [k for k in (int(c) for c in args.checkpoints.split(",")) if 0 < k <= budget]
    if budget not in checkpoints:
        checkpoints.append(budget)

    import ray

    from autoloss_app.search_job import run_search
    from autoloss_ray.store import ExperimentStore

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ray.init(address="local", num_cpus=args.num_cpus, log_to_driver=False,
             include_dashboard=False)
    t_all = time.monotonic()
    store = ExperimentStore(out / "store")
    runs: dict[str, list[dict[str, Any]]] = {}
    for searcher in searchers:
        for seed in range(args.seeds):
            opts = _options(args, searcher, seed)
            exists = opts.experiment in store.experiments()
            t0 = time.monotonic()
            outcome = run_search(dataclasses.replace(opts, resume=exists))
            seconds = time.monotonic() - t0
            trials = store.trials(opts.experiment)
            trials = trials[trials["kind"] == "search"].sort_values(["step", "sample"])
            rewards = [float(r) if s == "ok" else math.nan
                       for r, s in zip(trials["reward"], trials["status"])]
            runs.setdefault(searcher, []).append({
                "seed": seed, "seconds": seconds, "rewards": rewards,
                "best_theta": outcome.get("best_theta"),
                "best_trial_reward": outcome.get("best_trial_reward"),
            })
            print(f"[bench] {searcher} seed {seed}: {len(rewards)} trials, best "
                  f"{np.nanmax(rewards) if rewards else math.nan:.4f}, {seconds:.0f}s",
                  flush=True)

    # re-evaluate every recommendation with fresh training seeds (same data, same hold-out),
    # and the start theta with --noise-seeds seeds (the reward noise), all in parallel
    from autoloss_ray.losses.space import search_space

    init = search_space(args.metric, "bezier").init.tolist()
    jobs, where = [], []
    for searcher, reps in runs.items():
        for rep in reps:
            if rep["best_theta"] is None:
                continue
            base = _options(args, searcher, rep["seed"]).resolved().trial_config()
            for j in range(args.fresh):
                jobs.append({**base, "theta": rep["best_theta"], "device": "cpu",
                             "train_seed": FRESH_SEED0 + j})
                where.append((searcher, rep["seed"]))
    noise_base = _options(args, searchers[0], 0).resolved().trial_config()
    for j in range(args.noise_seeds):
        jobs.append({**noise_base, "theta": init, "device": "cpu",
                     "train_seed": FRESH_SEED0 + j})
        where.append(("noise", 0))
    t0 = time.monotonic()
    rewards = _run_trials(jobs)
    reeval_seconds = time.monotonic() - t0
    for (searcher, seed), r in zip(where, rewards):
        if searcher == "noise":
            continue
        rep = next(x for x in runs[searcher] if x["seed"] == seed)
        rep.setdefault("fresh_rewards", []).append(r)
    noise = [r for (s, _), r in zip(where, rewards) if s == "noise"]
    wall = time.monotonic() - t_all

    # the table
    header = (["searcher"] + [f"best after {k}" for k in checkpoints]
              + [f"recommended, {args.fresh} fresh seed(s)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table: dict[str, Any] = {}
    for searcher, reps in runs.items():
        curves = [best_so_far(r["rewards"]) for r in reps]
        row = {f"best@{k}": summary([c[k - 1] if len(c) >= k else math.nan for c in curves])
               for k in checkpoints}
        row["recommended"] = summary([float(np.nanmean(r.get("fresh_rewards") or [math.nan]))
                                      for r in reps])
        table[searcher] = row
        lines.append("| " + " | ".join([searcher] + [_fmt(row[f"best@{k}"])
                                                       for k in checkpoints]
                                        + [_fmt(row["recommended"])]) + " |")
    noise_s = summary(noise)
    md = "\n".join(lines) + (
        f"\n\nmean ± std over {args.seeds} seed(s); reward = hold-out {args.metric}. "
        f"Reward noise (the start theta, {noise_s['n']} training seeds): mean "
        f"{noise_s['mean']:.4f}, std {noise_s['std']:.4f}, range {noise_s['min']:.4f}.."
        f"{noise_s['max']:.4f}. Wall time {wall:.0f} s ({reeval_seconds:.0f} s of it "
        "re-evaluations and noise).\n")
    print(md, flush=True)
    (out / "table.md").write_text(md)
    result = {"args": vars(args), "checkpoints": checkpoints, "runs": runs, "table": table,
              "noise": {"rewards": noise, **noise_s}, "wall_seconds": wall,
              "reeval_seconds": reeval_seconds}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    plot(runs, out / "best_so_far.png", metric=args.metric, budget=budget)
    print(f"[bench] wrote {out / 'table.md'}, {out / 'results.json'}, "
          f"{out / 'best_so_far.png'}", flush=True)
    ray.shutdown()
    return 0


def plot(runs: dict[str, list[dict[str, Any]]], path: Path, *, metric: str,
         budget: int) -> None:
    """Best-so-far reward vs trials: mean over seeds per searcher, band = min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for searcher, reps in runs.items():
        curves = np.full((len(reps), budget), np.nan)
        for i, r in enumerate(reps):
            c = best_so_far(r["rewards"])[:budget]
            curves[i, : len(c)] = c
        x = np.arange(1, budget + 1)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(curves, axis=0)
                lo, hi = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        (line,) = ax.plot(x, mean, lw=2, label=f"{searcher} ({len(reps)} seeds)")
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("trials")
    ax.set_ylabel(f"best hold-out {metric} so far")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("search quality: best-so-far reward (band: min..max over seeds)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
