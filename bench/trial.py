"""Seconds per proxy trial (``autoloss_ray.train.run_trial``), on CPU and, if present, on GPU.

Two recipes:

* ``demo``: the CLI demo recipe (``autoloss_app.options.RECIPES["demo"]``: tiny model, 64x64,
  60 iterations, batch 8, 192 synthetic images with a 25% hold-out), run in full;
* ``default``: the paper's proxy recipe shape (lraspp_mobilenet_v3_large, 128x128, batch 32,
  hold-out 10%) but only ``--iterations`` SGD iterations; the per-iteration time (measured
  after ``--warmup`` iterations) is **extrapolated** to 1000 iterations, plus the measured
  evaluation time. The output says which numbers are extrapolated.

The loss is the searched-loss default (``SurrogateLoss(metric, "bezier")``, identity curves)
unless ``--loss`` names a baseline. Example::

    python bench/trial.py                       # both recipes, every available device
    python bench/trial.py --recipes default --devices cuda --iterations 50 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["demo", "default"], choices=["demo", "default"])
    p.add_argument("--devices", nargs="+", default=None,
                   help="devices to time (default: cpu, plus cuda when available)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations of the scaled-down default recipe (default: 6 on CPU, 60 on "
                        "CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="iterations excluded from the per-iteration time (default: 2 on CPU, 10 on "
                        "CUDA)")
    p.add_argument("--model", default="lraspp_mobilenet_v3_large",
                   help="model of the default recipe")
    p.add_argument("--batch-size", type=int, default=32, help="batch of the default recipe")
    p.add_argument("--image-size", type=int, default=128, help="image size of the default recipe")
    p.add_argument("--metric", default="miou")
    p.add_argument("--loss", default=None, help="a baseline loss name instead of the surrogate")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p.parse_args(argv)


def time_trial(config: dict, warmup: int) -> dict:
    from autoloss_ray.train import run_trial

    stamps: list[float] = []
    start = time.perf_counter()
    result = run_trial({**config, "progress_every": 1}, progress=lambda row: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - start
    steady = stamps[warmup:]
    per_iter = (steady[-1] - steady[0]) / (len(steady) - 1) if len(steady) > 1 else float("nan")
    return {"result": result, "wall": wall, "per_iter": per_iter}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from autoloss_app.options import RECIPES

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"# bench/trial.py  torch {torch.__version__}  host {platform.node()}  "
          f"cpu threads {torch.get_num_threads()}  cuda "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    rows = []
    for device in devices:
        gpu = device.startswith("cuda")
        for recipe in args.recipes:
            base = {"metric": args.metric, "loss": args.loss, "seed": 0, "device": device}
            if recipe == "demo":
                demo = RECIPES["demo"]
                config = {
                    **base,
                    **{k: demo[k] for k in ("model", "image_size", "iterations", "batch_size",
                                            "train_size", "holdout_fraction")},
                }
                warmup = 2
            else:
                iters = args.iterations or (60 if gpu else 6)
                warmup = args.warmup if args.warmup is not None else (10 if gpu else 2)
                warmup = min(warmup, max(iters - 2, 0))
                config = {**base, "model": args.model, "image_size": args.image_size,
                          "batch_size": args.batch_size, "iterations": iters,
                          "train_size": 320, "holdout_fraction": 0.1}
            t = time_trial(config, warmup)
            r = t["result"]
            if r["status"] != "ok":
                print(f"{recipe:8s} {device:5s} status {r['status']}: {r['error']}")
                continue
            ips = config["batch_size"] / t["per_iter"]
            row = {
                "recipe": recipe, "device": r["device"], "device_name": r["device_name"],
                "model": config["model"], "image_size": config["image_size"],
                "batch_size": config["batch_size"], "iterations_run": r["iterations"],
                "trial_seconds": t["wall"], "train_seconds": r["train_seconds"],
                "eval_seconds": r["eval_seconds"], "seconds_per_iteration": t["per_iter"],
                "images_per_second": ips, "reward": r["reward"],
            }
            if recipe == "default":
                row["extrapolated_seconds_per_1000_iterations"] = 1000 * t["per_iter"]
                row["extrapolated_trial_seconds"] = 1000 * t["per_iter"] + r["eval_seconds"]
            rows.append(row)
            if recipe == "demo":
                print(f"demo     {row['device']:5s} {row['model']} {row['image_size']}px b{row['batch_size']} "
                      f"x{row['iterations_run']} it: {row['trial_seconds']:.2f} s per trial "
                      f"(train {row['train_seconds']:.2f} s, eval {row['eval_seconds']:.2f} s), "
                      f"{ips:.0f} img/s, reward {row['reward']:.3f}")
            else:
                print(f"default  {row['device']:5s} {row['model']} {row['image_size']}px b{row['batch_size']}: "
                      f"ran {row['iterations_run']} it ({row['trial_seconds']:.1f} s), "
                      f"{t['per_iter']:.3f} s/it, {ips:.1f} img/s -> EXTRAPOLATED "
                      f"{row['extrapolated_seconds_per_1000_iterations']:.0f} s per 1000 it, "
                      f"~{row['extrapolated_trial_seconds']:.0f} s per trial incl. eval "
                      f"({row['eval_seconds']:.2f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
