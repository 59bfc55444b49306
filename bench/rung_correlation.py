"""How well does a proxy trial's reward at a rung predict its final reward?

Trains ``--thetas`` surrogate losses drawn uniformly in the search box (what random search,
TPE's start and PPO2's ``--startup uniform`` draw) with the search recipe, scoring the
hold-out at each rung (``rungs`` in the trial config: the training size, the cheap
protocol) and at the end (``--final-protocol``, the trial's reward as a search records it),
then prints the table, the Spearman rank correlation of each rung's rewards with the final
rewards (scipy.stats.spearmanr), and whether the final best theta would survive a cut to
the top 1/2 and 1/3 at that rung (ASHA's reduction factors 2 and 3). Every trial uses the
same data, split and training seed (common random numbers, as a search does).

    .venv/bin/python bench/rung_correlation.py --data-root /work/shared/data/camvid

Default recipe = bench/camvid_experiment.sh's search (`autoloss search`'s demo recipe: the
tiny net, 192 CamVid training images of which a quarter are the hold-out; 96 px, 80
iterations, batch 8), built by ``SearchOptions(...).trial_config()`` as the search builds it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def _rungs(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rungs must be comma-separated iterations such as 10,20,40; got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="camvid", help="dataset name (default camvid)")
    p.add_argument("--data-root", default="/work/shared/data/camvid",
                   help="the dataset's folder (default /work/shared/data/camvid)")
    p.add_argument("--metric", default="miou", help="searched metric spec (default miou)")
    p.add_argument("--thetas", type=int, default=16,
                   help="how many thetas to train (default 16)")
    p.add_argument("--iterations", type=int, default=80, help="training iterations (80)")
    p.add_argument("--rungs", type=_rungs, default=[10, 20, 40, 60],
                   help="comma-separated rung iterations, each below --iterations "
                        "(default 10,20,40,60)")
    p.add_argument("--image-size", type=int, default=96, help="training size (96)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (8)")
    p.add_argument("--final-protocol", default="native", choices=("native", "train_size"),
                   help="protocol of the final reward (default native, the trial's default)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the theta draws and of every trial's data (default 0)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: torch's own choice)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.thetas < 3:
        p.error(f"--thetas must be >= 3 for a rank correlation; got {args.thetas}")

    import torch
    from scipy.stats import spearmanr

    from autoloss_ray.losses.space import search_space
    from autoloss_ray.search import RandomSearch
    from autoloss_ray.train import check_trial_config, run_trial

    if args.threads:
        torch.set_num_threads(args.threads)
    space = search_space(args.metric, "bezier")
    draws = RandomSearch(low=space.low, high=space.high, samples_per_step=args.thetas,
                         seed=args.seed).ask()
    from autoloss_app.options import SearchOptions

    # the trial config `autoloss search` gives its trials (the demo recipe: tiny net, 192
    # training images, a quarter held out), with the rungs added
    opts = SearchOptions(dataset=args.dataset, data_root=args.data_root, metric=args.metric,
                         image_size=args.image_size, iterations=args.iterations,
                         batch_size=args.batch_size, eval_protocol=args.final_protocol,
                         seed=args.seed, gpus_per_trial=0).resolved()
    base = {k: v for k, v in opts.trial_config().items() if k != "crn"}
    base.update(rungs=args.rungs, device="cpu")
    check_trial_config(base)  # bad options fail here, before any training
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]), flush=True)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), load average at start {os.getloadavg()[0]:.1f}", flush=True)
    table = np.full((args.thetas, len(args.rungs) + 1), np.nan)
    start = time.perf_counter()
    for i, theta in enumerate(draws):
        rows: list[dict] = []
        result = run_trial({**base, "theta": [float(v) for v in theta]}, progress=rows.append)
        by_it = {r["rung_iteration"]: r["rung_reward"] for r in rows if "rung_iteration" in r}
        table[i, :-1] = [by_it.get(r, np.nan) for r in args.rungs]
        table[i, -1] = result["reward"] if result["status"] == "ok" else np.nan
        print(f"theta {i:2d}: " + " ".join(f"{v:.4f}" for v in table[i])
              + f"  ({result['status']}, train {result['train_seconds']:.1f} s, rungs "
              f"{result.get('rung_seconds', 0.0):.1f} s, eval {result['eval_seconds']:.1f} s)",
              flush=True)
    minutes = (time.perf_counter() - start) / 60
    ok = np.isfinite(table).all(axis=1)
    final = table[ok, -1]
    header = " ".join(f"it{r:>4d}" for r in args.rungs) + f"  final({args.final_protocol})"
    print(f"\n| theta | {' | '.join(f'it {r}' for r in args.rungs)} | final |")
    print("|---" * (len(args.rungs) + 2) + "|")
    for i in range(args.thetas):
        print(f"| {i} | " + " | ".join(f"{v:.4f}" for v in table[i]) + " |")
    print(f"\n{header}")
    summary = []
    best = int(np.argmax(final))
    for j, r in enumerate(args.rungs):
        rho, pval = spearmanr(table[ok, j], final)
        order = np.argsort(-table[ok, j])
        keep = {rf: bool(best in order[: max(1, int(np.ceil(ok.sum() / rf)))]) for rf in (2, 3)}
        summary.append({"rung": r, "spearman": float(rho), "p": float(pval),
                        "best_survives_half": keep[2], "best_survives_third": keep[3]})
        print(f"rung {r:4d}/{args.iterations}: Spearman rho = {rho:+.3f} (p = {pval:.3g}, "
              f"n = {int(ok.sum())}); the final best survives a cut to the top 1/2: "
              f"{keep[2]}, to the top 1/3: {keep[3]}")
    print(f"{args.thetas} trials in {minutes:.1f} min")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "table": table.tolist(), "summary": summary,
                       "minutes": minutes}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
