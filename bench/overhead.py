"""What a proxy trial costs beyond a bare PyTorch training loop (issue 31), side by side in one run.

For each recipe, three measurements on the same device, model, data and optimizer:

* ``trial``: one proxy trial as a search runs it (``autoloss_ray.train.run_trial``: data
  pipeline, surrogate loss, checks, host reads, evaluation); its training time per iteration
  is ``train_seconds / iterations``.
* ``bare``: a bare loop written here: the same model (same seed), the training batches
  already in memory on the device (drawn once from the trial's own pipeline, so the same
  images), ``torch.optim.SGD`` with the trial's settings, ``F.cross_entropy``; no checks,
  no host reads. Timed per iteration.
* ``phases``: the trial's own pieces (its batch pipeline, its loss from ``build_loss``, its
  param groups and speed options) in a loop that waits for the device after each phase, so
  each phase's time is its own: data, forward, loss, backward, step. The waits make the
  sum a little larger than the trial's training time; the shares are what to read.

It prints ``overhead: X.XXx`` = trial per-iteration time / bare per-iteration time (the goal
of issue 31: <= 1.3x with the surrogate in the trial), the same with cross entropy in the
trial (``--also-ce``: what the surrogate adds on its own), the trial with its decoded-image
cache off (``--also-nocache``: ``data_cache_mb=0``, every draw decoded from its file, the data
path before issue 31's cache), and the breakdown of the trial's
wall time: set-up (datasets, model, loss; the rest of ``run_trial`` outside the training
and evaluation), training (split by the phases' shares) and evaluation. Reporting to Tune
and the store's Parquet write happen outside ``run_trial`` (one ``tune.report`` and one file
per trial) and are not in these numbers.

Recipes: ``demo`` (the CLI's demo recipe: tiny net, 64 px, 60 iterations, batch 8,
synthetic) and ``camvid`` (the README's CamVid search recipe: tiny net, 96 px, 80
iterations, batch 8, train_size scoring; needs ``--camvid DIR``, default
``../shared/data/camvid`` when it exists) and ``paper`` (the paper's proxy recipe,
deeplabv3_resnet50, 128 px, batch 32, at 100 iterations: for a GPU).

Run: python bench/overhead.py [--recipes demo camvid] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

GOAL = 1.3
DEFAULT_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=None, choices=["demo", "camvid", "paper"],
                   help="default: demo, plus camvid when its folder exists; paper (the "
                   "paper's proxy recipe at 100 iterations) is meant for a GPU")
    p.add_argument("--camvid", default=str(DEFAULT_CAMVID), help="CamVid folder (camvid recipe)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--metric", default="miou", help="the surrogate's metric (default miou)")
    p.add_argument("--iterations", type=int, default=None,
                   help="override the recipe's iterations (e.g. 3 for a smoke run)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each measurement; the median is printed (default 1)")
    p.add_argument("--warmup-runs", type=int, default=1,
                   help="untimed trials first (Triton's and cuDNN's first-call compilation and "
                   "autotuning, first-touch allocations; default 1)")
    p.add_argument("--also-ce", action="store_true",
                   help="also run the trial with cross entropy (what the surrogate adds)")
    p.add_argument("--also-nocache", action="store_true",
                   help="also run the trial with data_cache_mb=0 (the DataLoader decoding "
                   "every draw from its file, as before the decoded cache)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def recipe_config(name: str, args) -> dict:
    """The trial config of recipe ``name`` (a plain dict for ``run_trial``)."""
    from autoloss_app.options import RECIPES

    if name == "demo":
        demo = RECIPES["demo"]
        cfg = {k: demo[k] for k in ("model", "image_size", "iterations", "batch_size",
                                    "train_size", "holdout_fraction", "eval_protocol")}
    elif name == "paper":
        cfg = {"model": "deeplabv3_resnet50", "image_size": 128, "iterations": 100,
               "batch_size": 32, "train_size": 320, "holdout_fraction": 0.1,
               "eval_protocol": "native"}
    else:
        cfg = {"dataset": "camvid", "data_root": args.camvid, "model": "tiny",
               "image_size": 96, "iterations": 80, "batch_size": 8,
               "eval_protocol": "train_size", "holdout_fraction": 0.25, "train_size": 192}
    if args.iterations:
        cfg["iterations"] = args.iterations
    return {**cfg, "metric": args.metric, "seed": 0, "device": args.device}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_trial(config: dict) -> dict:
    """One ``run_trial``: wall, training and evaluation seconds, per-iteration training time."""
    from autoloss_ray.train import run_trial

    t0 = time.perf_counter()
    r = run_trial(config)
    wall = time.perf_counter() - t0
    if r["status"] != "ok":
        raise RuntimeError(f"the trial did not finish: {r['status']}: {r['error']}")
    return {"wall": wall, "train": r["train_seconds"], "eval": r["eval_seconds"],
            "per_iter": r["train_seconds"] / r["iterations"], "reward": r["reward"]}


def _pieces(config: dict):
    """The trial's config, device, datasets, loss, speed options and a fresh model."""
    import torch

    from autoloss_ray.models import build_model
    from autoloss_ray.trial.build import build_data, build_loss, resolve_device
    from autoloss_ray.trial.config import check_trial_config
    from autoloss_ray.trial.loop import _speed_options

    cfg = check_trial_config(config)
    device = resolve_device(cfg.device)
    train_set, _ = build_data(cfg)
    criterion = build_loss(cfg, train_set.num_classes, train_set.ignore_index, train_set)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=train_set.num_classes)
    speed = _speed_options(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = speed["cudnn_benchmark"]
    return cfg, device, train_set, criterion, model, speed


def time_bare(config: dict) -> dict:
    """The bare loop: batches in memory, SGD, cross entropy; seconds per iteration."""
    import torch
    import torch.nn.functional as F

    from autoloss_ray.trial.loop import _train_batches

    cfg, device, train_set, _, model, speed = _pieces(config)
    batches = [(x.clone(), y.clone())
               for x, y in _train_batches(cfg, train_set, device, speed, cfg.seed)]
    model.to(device)
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    ignore = train_set.ignore_index if train_set.ignore_index is not None else -100
    amp = device.type == "cuda" and cfg.amp
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    for x, y in batches:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, ignore_index=ignore)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return {"per_iter": (time.perf_counter() - t0) / len(batches)}


def time_phases(config: dict) -> dict:
    """The trial's pieces, one phase at a time: seconds per iteration of each phase."""
    import torch

    from autoloss_ray.losses.surrogate import SurrogateLoss
    from autoloss_ray.models import param_groups
    from autoloss_ray.trial.loop import _autocast, _train_batches

    cfg, device, train_set, criterion, model, speed = _pieces(config)
    model.to(device)
    criterion.to(device)
    raw = isinstance(criterion, SurrogateLoss)
    if raw:
        criterion.prepare(device, torch.float32)
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(param_groups(model, cfg.lr, cfg.head_lr_mult), lr=cfg.lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    t = dict.fromkeys(("data", "forward", "loss", "backward", "step"), 0.0)
    batches = iter(_train_batches(cfg, train_set, device, speed, cfg.seed))
    model.train()
    n = 0
    while True:
        _sync(device)
        t0 = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        _sync(device)
        t1 = time.perf_counter()
        with _autocast(device, cfg.amp, cpu=cfg.amp_cpu):
            out = model(x)
        _sync(device)
        t2 = time.perf_counter()
        loss = criterion(out if raw else out.float(), y)
        _sync(device)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t4 = time.perf_counter()
        opt.step()
        _sync(device)
        t5 = time.perf_counter()
        for k, a, b in (("data", t0, t1), ("forward", t1, t2), ("loss", t2, t3),
                        ("backward", t3, t4), ("step", t4, t5)):
            t[k] += b - a
        n += 1
    return {k: v / n for k, v in t.items()}


def _runs(rows: list[dict]) -> str:
    return ", ".join(f"{1000 * r['per_iter']:.2f}" for r in rows)


def _median(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    recipes = args.recipes or (["demo"] + (["camvid"] if Path(args.camvid).is_dir() else []))
    if args.repeats < 1 or args.warmup_runs < 0 or (args.iterations is not None
                                                    and args.iterations < 1):
        print("overhead.py: error: --repeats and --iterations must be >= 1, --warmup-runs "
              ">= 0", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"overhead.py: error: --device {args.device}: CUDA is not available here",
              file=sys.stderr)
        return 2
    if "camvid" in recipes and not Path(args.camvid).is_dir():
        print(f"overhead.py: error: --camvid {args.camvid} is not a folder", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    print(f"bench/overhead.py: {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
          + f", metric {args.metric}, median of {args.repeats} after {args.warmup_runs} "
          "untimed trial(s)")
    worst = 0.0
    for name in recipes:
        config = recipe_config(name, args)
        trial, bare, phases, ce, nocache = [], [], [], [], []
        for _ in range(args.warmup_runs):
            time_trial(config)
        for _ in range(args.repeats):  # interleaved, so drift hits all alike
            trial.append(time_trial(config))
            bare.append(time_bare(config))
            phases.append(time_phases(config))
            if args.also_ce:
                ce.append(time_trial({**config, "loss": "ce"}))
            if args.also_nocache:
                nocache.append(time_trial({**config, "data_cache_mb": 0}))
        tr, ba, ph = _median(trial), _median(bare), _median(phases)
        ratio = tr["per_iter"] / ba["per_iter"]
        worst = max(worst, ratio)
        print(f"\n[{name}] {config['model']} {config['image_size']} px, batch "
              f"{config['batch_size']}, {config['iterations']} iterations")
        print(f"  trial (surrogate {args.metric}) {1000 * tr['per_iter']:8.2f} ms/it   "
              f"(runs: {_runs(trial)})")
        if ce:
            c = _median(ce)
            print(f"  trial (cross entropy)     {1000 * c['per_iter']:8.2f} ms/it   "
                  f"{c['per_iter'] / ba['per_iter']:.2f}x bare")
        if nocache:
            c = _median(nocache)
            print(f"  trial, no decoded cache    {1000 * c['per_iter']:8.2f} ms/it   "
                  f"{c['per_iter'] / ba['per_iter']:.2f}x bare   (runs: {_runs(nocache)})")
        print(f"  bare loop (cross entropy)   {1000 * ba['per_iter']:8.2f} ms/it   "
              f"(runs: {_runs(bare)})")
        total = sum(ph.values())
        print("  phases of the trial's iteration (device waits between phases): "
              + ", ".join(f"{k} {1000 * v:.2f} ms ({100 * v / total:.0f}%)"
                          for k, v in ph.items()))
        setup = tr["wall"] - tr["train"] - tr["eval"]
        print(f"  trial wall {tr['wall']:.2f} s = set-up {setup:.2f} s "
              f"({100 * setup / tr['wall']:.0f}%) + training {tr['train']:.2f} s "
              f"({100 * tr['train'] / tr['wall']:.0f}%) + evaluation {tr['eval']:.2f} s "
              f"({100 * tr['eval'] / tr['wall']:.0f}%)")
        print(f"  overhead: {ratio:.2f}x  (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'MISSED'})")
    print(f"\noverhead: {worst:.2f}x (worst recipe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
