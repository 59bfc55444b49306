"""Data-parallel overheads on this machine (CPU, Gloo).

1. The synchronized surrogate: forward+backward of ``SurrogateLoss(sync="none")`` vs
   ``sync="ddp"`` on 2 Gloo ranks (torch.multiprocessing), each rank holding N images of
   C classes at HxW; the difference is the all-reduce of the per-class sums (one per metric
   term, a few [C] vectors) plus its wait for the slower rank.
2. Retrain throughput: ``run_trial`` in one process (today's ``--workers 1``) vs a Ray Train
   ``TorchTrainer`` of 1 and 2 CPU workers (``trainables.retrain_ddp``), training images per
   second (training loop only) and the wall time of the whole run (start-up included).

Usage: .venv/bin/python bench/ddp.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _loss_worker(rank, init, world, shape, specs, reps, q):
    from autoloss_ray.losses.surrogate import SurrogateLoss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    N, C, H, W = shape
    g = torch.Generator().manual_seed(rank)
    z = torch.randn(shape, generator=g)
    t = torch.randint(0, C, (N, H, W), generator=g)
    out = {}
    for spec in specs:
        for sync in ("none", "ddp"):
            loss = SurrogateLoss(spec, num_classes=C, sync=sync)
            times = []
            for _ in range(reps + 1):
                zz = z.clone().requires_grad_(True)
                dist.barrier()
                t0 = time.perf_counter()
                loss(zz, t).backward()
                times.append(time.perf_counter() - t0)
            out[(spec, sync)] = sorted(times[1:])[len(times[1:]) // 2]
    if rank == 0:
        q.put(out)
    dist.destroy_process_group()


def bench_loss(shape, specs, reps) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    d = tempfile.mkdtemp(prefix="bddp")
    mp.spawn(_loss_worker, args=(f"file://{d}/rv", 2, shape, specs, reps, q), nprocs=2)
    res = q.get()
    print(f"\n## surrogate forward+backward per rank, 2 Gloo ranks, 1 thread each, "
          f"[N, C, H, W] = {list(shape)} per rank (median of {reps})\n")
    print("| metric | sync=none ms | sync=ddp ms | all-reduce cost ms |")
    print("|---|---|---|---|")
    for spec in specs:
        a, b = res[(spec, "none")] * 1e3, res[(spec, "ddp")] * 1e3
        print(f"| {spec} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")


def bench_retrain(iterations: int, image_size: int, batch_size: int) -> None:
    import ray

    from autoloss_ray.train import run_trial
    from trainables.retrain_ddp import _trainer, ddp_train_loop

    cfg = {"loss": "ce", "metric": "miou", "dataset": "synthetic", "model": "tiny",
           "iterations": iterations, "batch_size": batch_size, "image_size": image_size,
           "train_size": 64, "eval_split": "val", "seed": 0}
    rows = []
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray worker with 1 CPU runs (OMP_NUM_THREADS=1)
    try:
        r = run_trial({**cfg, "device": "cpu"})
    finally:
        torch.set_num_threads(threads)
    rows.append(("run_trial, 1 process, 1 thread (--workers 1)", r["images_per_second"],
                 time.perf_counter() - t0, r["miou"]))
    tmp = tempfile.mkdtemp(prefix="rx", dir="/tmp")
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=tmp)
    try:
        for workers in (1, 2):
            t0 = time.perf_counter()
            res = _trainer(ddp_train_loop, dict(cfg), name=f"bench{workers}", workers=workers,
                           gpus_per_worker=0, cpus_per_worker=1,
                           storage=os.path.join(tmp, "train"), max_failures=0).fit()
            m = res.metrics
            rows.append((f"TorchTrainer, {workers} CPU worker(s)", m["images_per_second"],
                         time.perf_counter() - t0, m["miou"]))
    finally:
        ray.shutdown()
    print(f"\n## retrain throughput: tiny model, {image_size}x{image_size}, global batch "
          f"{batch_size}, {iterations} iterations, CE\n")
    print("| run | train images/s | wall s (start-up included) | val mIoU |")
    print("|---|---|---|---|")
    for name, ips, wall, miou in rows:
        print(f"| {name} | {ips:.1f} | {wall:.1f} | {miou:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    if a.quick:
        bench_loss((2, 11, 64, 64), ("miou", "bf1"), 3)
        bench_retrain(10, 32, 4)
    else:
        bench_loss((4, 11, 128, 128), ("miou", "bf1", "miou+biou", "gacc"), 7)
        bench_retrain(60, 64, 8)


if __name__ == "__main__":
    main()
