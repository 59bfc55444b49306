"""Does the search pay? The pre-registered, paired, val-scored searcher comparison (not a test).

The plan (docs/benchmarks.md, "Which searcher?", written before the run): on the CamVid
proxy (tiny network, 96x96, 80 iterations, batch 8, reward = hold-out mIoU on 25 % of a
192-image subset of CamVid train), for each seed, every arm searches with the same
seed (= the same data subset, hold-out split and common training seed, ``--crn``):

====================  ===========================================================  =========
arm                   search                                                       answer
====================  ===========================================================  =========
``random``            random search, T x M trials                                  best trial
``tpe``               TPE (optuna), T x M trials                                   best trial
``ppo-paper``         PPO2 as the paper, T x M trials                              policy mean
``ppo``               the same PPO2 search (the shipped default)                   best trial
``ppo-asha``          PPO2 + ASHA (grace = iterations/4, factor 2), 2T x M drawn,  best trial
                      cut at the others' compute: the trials, in proposal order,
                      whose training iterations sum to <= T x M x iterations
====================  ===========================================================  =========

``ppo-paper`` and ``ppo`` are one search answered by two rules. Every arm's answer is then
re-trained on *all* of CamVid train (367 images, the proxy's recipe but 300 iterations, as
``bench/camvid_experiment.sh`` retrains) with ``--fresh`` training
seeds never used by a search, and scored on **CamVid val** (101 images, native resolution),
which no search sees. An arm's score for a seed is the mean over its fresh seeds.

Statistics (:mod:`paired_stats`): per-seed paired differences against the reference arm
``ppo`` (the shipped default), their mean +- SE, a two-sided paired t-test, Holm-corrected over
the four comparisons at 0.05, wins out of seeds, and the smallest difference the run could
detect (power 0.8). The decision rule (:func:`paired_stats.decide`): the defaults change to
the arm significantly better than ``ppo`` with the largest mean difference; with none, they
stay, and the docs say which arm had the best mean and what the run could not resolve.

It runs seed by seed (all arms of a seed, then the seed's re-trainings), so a cut leaves
complete pairs; the searches live in ``<out>/store`` (a rerun resumes them), every
re-training's result in ``<out>/retrains.jsonl``, a finished seed in ``<out>/seeds/``.
``--report-only`` (``search_quality_report.py``) rebuilds ``table.md``, ``results.json``, ``paired.png`` and
``best_so_far.png`` from ``<out>/seeds`` without training.

Full run: ``bash bench/search_quality.sh``. A smoke run: ``python bench/search_quality.py
--seeds 0 --steps 1 --samples 2 --iterations 8 --retrain-iterations 8 --fresh 1 --out
runs/sq-smoke``.
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
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_quality_report import (  # noqa: E402
    ARMS,
    PLAN_SEEDS,
    SEARCHES,
    report,
)

FRESH_SEED0 = 10_000  # fresh training seeds of the re-trainings: 10000, 10001, ...


def trial_compute(rows) -> list[int]:
    """Training iterations each search trial [N] cost, in the rows' order: a trial a rung
    stopped cost its rung (``rung_iteration``); any other one its ``iterations``."""
    out = []
    for r in rows.itertuples(index=False):
        n = 0 if pd.isna(r.iterations) else int(r.iterations)
        if bool(r.stopped_early) and isinstance(r.extra_json, str):
            rung = json.loads(r.extra_json).get("rung_iteration")
            if rung is not None:
                n = int(rung)
        out.append(n)
    return out


def budget_cut(compute: list[int], budget: int) -> int:
    """How many trials, in proposal order, fit in ``budget`` training iterations."""
    total = 0
    for i, c in enumerate(compute):
        if total + c > budget:
            return i
        total += c
    return len(compute)


def _options(args, search: str, seed: int):
    from autoloss_app.options import SearchOptions

    searcher, scheduler, factor = SEARCHES[search]
    return SearchOptions(
        metric=args.metric, searcher=searcher, dataset=args.dataset, data_root=args.data_root or None,
        image_size=args.image_size, iterations=args.iterations, batch_size=args.batch_size,
        steps=args.steps * factor, samples=args.samples, seed=seed, crn=True,
        scheduler=scheduler, store=str(Path(args.out).resolve() / "store"),
        tune_dir=str(Path(args.out).resolve() / "tune"),
        experiment=f"{search}-seed{seed}", verbose=0, gpus_per_trial=0, answer="best-trial",
    )


def _retrain_config(args, search: str, seed: int, theta: list[float], j: int) -> dict:
    cfg = _options(args, search, seed).resolved().trial_config()
    cfg.pop("rungs", None)
    cfg.pop("holdout_fraction", None)
    return {**cfg, "theta": [float(v) for v in theta], "train_size": 0, "eval_split": "val",
            "eval_protocol": "native", "iterations": args.retrain_iterations,
            "train_seed": FRESH_SEED0 + j, "device": "cpu"}


def _retrain_key(seed: int, j: int, theta: list[float], iterations: int) -> str:
    return json.dumps([seed, j, iterations, [round(float(v), 9) for v in theta]])


def _run_retrains(configs: list[dict[str, Any]]):
    """Re-train configs as Ray tasks (one CPU each, in parallel); yields ``(index, result)``
    as each finishes, so the caller saves every result the moment it exists."""
    import ray

    from autoloss_ray.train import METRIC_KEYS, run_trial

    @ray.remote(num_cpus=1)
    def one(cfg):
        import torch

        torch.set_num_threads(1)  # as a Tune trial with one CPU runs
        try:
            r = run_trial(cfg)
        except Exception as exc:  # noqa: BLE001 - a failed re-training is recorded as NaN
            return {"reward": math.nan, "status": "failed", "error": repr(exc)[:500]}
        return {"reward": float(r["reward"]) if r.get("status") == "ok" else math.nan,
                "status": r.get("status"), "error": r.get("error"),
                "train_seconds": r.get("train_seconds"), "eval_seconds": r.get("eval_seconds"),
                **{k: float(r[k]) for k in METRIC_KEYS if k in r}}

    refs = {one.remote(c): i for i, c in enumerate(configs)}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            yield refs.pop(ref), ray.get(ref)


def run_seed(args, seed: int, store, cache_path: Path) -> dict[str, Any]:
    """All searches of one seed (resumed where the store has them), every arm's answer and
    its re-trainings on all of train scored on val."""
    from autoloss_app.search_job import run_search
    from autoloss_ray.report import best_theta

    budget = args.steps * args.samples * args.iterations
    searches: dict[str, Any] = {}
    for search in SEARCHES:
        opts = _options(args, search, seed)
        t0 = time.monotonic()
        run_search(dataclasses.replace(opts, resume=opts.experiment in store.experiments()))
        rows = store.trials(opts.experiment)
        rows = rows[rows["kind"] == "search"].sort_values(["step", "sample"])
        searches[search] = {
            "rows": rows, "policy": store.policy(opts.experiment),
            "rewards": [float(r) if s == "ok" and not bool(st) else math.nan
                        for r, s, st in zip(rows["reward"], rows["status"],
                                            rows["stopped_early"])],
            "compute": trial_compute(rows), "seconds": time.monotonic() - t0,
        }
        print(f"[bench] seed {seed} {search}: {len(rows)} trials, "
              f"{sum(searches[search]['compute'])} iterations, "
              f"{searches[search]['seconds']:.0f} s", flush=True)

    arms: dict[str, Any] = {}
    for arm, (search, rule) in ARMS.items():
        s = searches[search]
        n = budget_cut(s["compute"], budget) if SEARCHES[search][1] == "asha" else len(s["rows"])
        rows = s["rows"].iloc[:n]
        theta = best_theta(rows, s["policy"], answer=rule)
        if theta is None:
            raise RuntimeError(f"seed {seed}: arm {arm} has no answer (no successful trial)")
        ok = [r for r in s["rewards"][:n] if math.isfinite(r)]
        arms[arm] = {"search": search, "answer": rule, "trials": n,
                     "compute": int(sum(s["compute"][:n])),
                     "best_search_reward": max(ok) if ok else math.nan,
                     "theta": [float(v) for v in theta]}

    cache = _read_cache(cache_path)
    todo, keys = [], []
    for a in arms.values():
        for j in range(args.fresh):
            key = _retrain_key(seed, j, a["theta"], args.retrain_iterations)
            if key not in cache and key not in keys:
                todo.append(_retrain_config(args, a["search"], seed, a["theta"], j))
                keys.append(key)
    if todo:
        print(f"[bench] seed {seed}: {len(todo)} re-training(s) on all of train, scored on "
              "val", flush=True)
        t0 = time.monotonic()
        for i, res in _run_retrains(todo):
            key = keys[i]
            cache[key] = res
            with cache_path.open("a") as f:
                f.write(json.dumps({"key": key, **res}) + "\n")
        print(f"[bench] seed {seed}: re-trainings took {time.monotonic() - t0:.0f} s",
              flush=True)
    for a in arms.values():
        res = [cache[_retrain_key(seed, j, a["theta"], args.retrain_iterations)]
               for j in range(args.fresh)]
        a["val_rewards"] = [r["reward"] for r in res]
        a["val_score"] = float(np.mean(a["val_rewards"]))
    return {"seed": seed, "budget_iterations": budget,
            "searches": {k: {"rewards": v["rewards"], "compute": v["compute"],
                             "seconds": v["seconds"]} for k, v in searches.items()},
            "arms": arms}


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    cache: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                cache[row.pop("key")] = row
    return cache


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"--seeds takes distinct non-negative integers separated by commas, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=_seed_list, default=_seed_list(PLAN_SEEDS),
                   help=f"the seeds, run one after another (default: the plan's {PLAN_SEEDS})")
    p.add_argument("--steps", type=int, default=3, help="T of the FIFO searches (3); "
                   "ppo-asha draws 2T steps, cut at the same training iterations")
    p.add_argument("--samples", type=int, default=8, help="M (8)")
    p.add_argument("--fresh", type=int, default=2,
                   help="fresh training seeds per answer re-trained on all of train (2)")
    p.add_argument("--metric", default="miou")
    p.add_argument("--dataset", default="camvid", help="a dataset with a val split (camvid)")
    p.add_argument("--data-root", default="../shared/data/camvid")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--iterations", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--retrain-iterations", type=int, default=300,
                   help="iterations of each re-training on all of train (300: the retrain "
                   "recipe of bench/camvid_experiment.sh)")
    p.add_argument("--num-cpus", type=int, default=None, help="Ray CPUs (default: all)")
    p.add_argument("--out", default="runs/search-quality")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the report from <out>/seeds; train nothing")
    args = p.parse_args(argv)
    for name in ("steps", "samples", "fresh", "iterations", "retrain_iterations"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    if args.report_only:
        return 0 if report(out, metric=args.metric) is not None else 1
    if args.dataset == "camvid" and not (Path(args.data_root) / "val").is_dir():
        p.error(f"--data-root {args.data_root!r} has no val/ folder: the comparison scores on "
                "CamVid val (give the CamVid folder)")
    (out / "seeds").mkdir(parents=True, exist_ok=True)

    import ray

    from autoloss_app.search_job import check_searcher_installed
    from autoloss_ray.store import ExperimentStore

    for searcher, _, _ in SEARCHES.values():
        check_searcher_installed(searcher)
    ray.init(address="local", num_cpus=args.num_cpus, log_to_driver=False,
             include_dashboard=False)
    store = ExperimentStore(out / "store")
    try:
        for seed in args.seeds:
            done = out / "seeds" / f"seed-{seed}.json"
            if done.exists():
                print(f"[bench] seed {seed}: done earlier ({done})", flush=True)
                continue
            t0 = time.monotonic()
            result = run_seed(args, seed, store, out / "retrains.jsonl")
            result["seconds"] = time.monotonic() - t0
            result["args"] = {k: v for k, v in vars(args).items() if k != "report_only"}
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1, default=float))
            tmp.replace(done)
            print(f"[bench] seed {seed} done in {result['seconds']:.0f} s: " + ", ".join(
                f"{a} {v['val_score']:.4f}" for a, v in result["arms"].items()), flush=True)
            report(out, metric=args.metric)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
