"""Retrain one loss with N data-parallel workers on Ray Train (``TorchTrainer``, DDP).

``retrain_ddp_task(config)`` is a Ray Tune function trainable (``autoloss retrain --workers
N`` runs one per loss in a ``Tuner``, the pattern Ray Train 2.60 (Train V2, the default)
documents for Tune over Train): it starts a ``TorchTrainer`` of ``workers`` workers (NCCL on
GPUs, Gloo on CPU), waits for it, and reports rank 0's final result to Tune, so the store row
is the one :func:`trainables.proxy.retrain_task` writes, plus ``workers`` and ``resumed_from``.

Each worker (:func:`ddp_train_loop`) runs the recipe of :func:`autoloss_ray.train.run_trial`
on its share of every global batch: the seeded stream of ``batch_size`` images per iteration
is the same as one process's, and rank r takes the r-th contiguous ``batch_size / workers``
of each batch (a DistributedSampler-style split without repetition). Gradients are averaged
by DDP; with ``loss_sync="ddp"`` a surrogate loss sums its statistics over the workers
(:mod:`autoloss_ray.distributed`), so the update is that of the global batch.
Every ``checkpoint_every`` iterations rank 0 saves model, optimizer and iteration through Ray
Train's checkpoint API; after a worker dies the group restarts (``max_failures``) and resumes
from the latest checkpoint. Evaluation is sharded over the workers and its integer counts
all-reduced (:meth:`MetricAccumulator.reduced`): exactly the single-process numbers.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["retrain_ddp_task", "ddp_train_loop", "ddp_evaluate_loop", "shard_batches",
           "DDP_KEYS"]

# config keys of the distributed run (not TrialConfig keys)
DDP_KEYS = ("workers", "gpus_per_worker", "cpus_per_worker", "max_failures", "checkpoint_every",
            "loss_sync", "train_storage", "fail_once")


def shard_batches(n: int, iterations: int, batch_size: int, seed: int, rank: int,
                  world: int, start: int = 0) -> list[list[tuple[int, int]]]:
    """Rank ``rank``'s part of the global batches ``start..iterations-1``: the batches of one
    process's seeded stream (``(index, draw)`` pairs, :class:`autoloss_ray.train`'s sampler),
    each cut into ``world`` contiguous parts of ``batch_size / world``."""
    import torch

    from autoloss_ray.train import _InfiniteSampler

    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the number of "
                         f"workers {world}")
    per = batch_size // world
    batches = list(torch.utils.data.BatchSampler(
        _InfiniteSampler(n, iterations * batch_size, seed), batch_size, drop_last=False))
    return [b[rank * per:(rank + 1) * per] for b in batches[start:]]


def _split_config(config: Mapping[str, Any]) -> tuple[dict, dict]:
    cfg = dict(config)
    ddp = {k: cfg.pop(k) for k in DDP_KEYS if k in cfg}
    return cfg, ddp


def _evaluate_shard(model, dataset, *, rank: int, world: int, num_classes: int,
                    ignore_index: int, boundary_tolerance: int, device, batch_size: int,
                    amp: bool, boundary_classes: str = "all",
                    background_index: int = 0) -> dict[str, float]:
    """The six metrics over the whole ``dataset``: this rank evaluates images rank::world and
    the counts are summed over the ranks (a collective: every rank calls it)."""
    import torch

    from autoloss_ray.metrics import MetricAccumulator
    from autoloss_ray.train import _autocast, _collate_by_size

    acc = MetricAccumulator(num_classes, ignore_index=ignore_index,
                            boundary_tolerance=boundary_tolerance, device=device,
                            boundary_classes=boundary_classes,
                            background_index=background_index)
    shard = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world)))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False,
                                         collate_fn=_collate_by_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for groups in loader:  # items of one image size and one label size per group
            for images, labels in groups:
                images, labels = images.to(device), labels.to(device)
                with _autocast(device, amp):
                    logits = model(images)
                if logits.shape[-2:] != labels.shape[-2:]:
                    logits = torch.nn.functional.interpolate(
                        logits.float(), size=labels.shape[-2:], mode="bilinear",
                        align_corners=False)
                acc.update(logits.argmax(dim=1), labels)
    model.train(was_training)
    return {k: float(v) for k, v in acc.compute(sync=True).items()}


def ddp_train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop (see the module docstring)."""
    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from autoloss_ray.losses.surrogate import SurrogateLoss
    from autoloss_ray.metrics import reward
    from autoloss_ray.models import build_model, param_groups
    from autoloss_ray.train import METRIC_KEYS, TrialConfig, _autocast, build_data, build_loss

    trial, ddp = _split_config(config)
    cfg = TrialConfig.from_mapping(trial)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    train_set, eval_set = build_data(cfg)
    num_classes, ignore_index = train_set.num_classes, train_set.ignore_index
    criterion = build_loss(cfg, num_classes, ignore_index, train_set)
    if isinstance(criterion, SurrogateLoss):
        criterion.sync = ddp.get("loss_sync", "none")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    model = build_model(cfg.model, num_classes=num_classes,
                        backbone_weights=cfg.backbone_weights)
    optimizer = torch.optim.SGD(param_groups(model, cfg.lr, cfg.head_lr_mult), lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start, losses = 0, []
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location="cpu",
                               weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, losses = int(state["iteration"]), list(state["losses"])
    model = ray.train.torch.prepare_model(model)  # to the device, DDP when world > 1
    criterion.to(device)
    every = int(ddp.get("checkpoint_every") or 0)
    fail = ddp.get("fail_once")  # test hook: [rank, iteration, marker path]

    def save_state(it: int) -> None:
        metrics = {"iteration": it, "loss": losses[-1] if losses else float("nan")}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": _unwrap(model).state_dict(),
                        "optimizer": optimizer.state_dict(), "iteration": it,
                        "losses": losses}, os.path.join(d, "state.pt"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    status, error = "ok", None
    t0 = time.perf_counter()
    model.train()
    for i, batch in enumerate(shard_batches(len(train_set), cfg.iterations, cfg.batch_size,
                                            cfg.seed, rank, world, start)):
        it = start + i
        factor = (1.0 - it / cfg.iterations) ** cfg.poly_power
        for group in optimizer.param_groups:
            group["lr"] = (group["initial_lr"] - cfg.min_lr) * factor + cfg.min_lr
        items = [train_set[pair] for pair in batch]
        images = torch.stack([x for x, _ in items]).to(device)
        labels = torch.stack([y for _, y in items]).to(device)
        with _autocast(device, cfg.amp):
            logits = model(images)
        loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):  # every rank stops (DDP's backward already synced)
            status, error = "nan", f"loss became {value} at iteration {it} on rank {rank}"
            break
        optimizer.step()
        losses.append(value)
        if fail and rank == fail[0] and it + 1 == fail[1] and not os.path.exists(fail[2]):
            open(fail[2], "w").close()
            _wait_for_a_committed_checkpoint(timeout_s=120.0)
            os._exit(1)  # a worker dies: Ray Train restarts the group from the checkpoint
        if every and (it + 1) % every == 0 and it + 1 < cfg.iterations:
            save_state(it + 1)
    train_seconds = time.perf_counter() - t0
    done = len(losses)  # iterations completed, those before a restart included
    result: dict[str, Any] = {
        "reward": float("nan"), **{k: float("nan") for k in METRIC_KEYS},
        "status": status, "error": error, "iterations": done,
        "train_seconds": train_seconds, "eval_seconds": 0.0,
        "device": device.type, "node": socket.gethostname(),
        "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
        "initial_loss": float(np.mean(losses[:10])) if losses else float("nan"),
        "images_per_second": (done - start) * cfg.batch_size / max(train_seconds, 1e-9),
        "num_train": len(train_set), "num_eval": len(eval_set), "metric": cfg.metric,
        "seed": cfg.seed, "workers": world, "resumed_from": start,
        "eval_protocol": cfg.eval_protocol,
    }
    if status == "ok":
        t1 = time.perf_counter()
        _broadcast_state(_unwrap(model))
        metrics = _evaluate_shard(
            _unwrap(model), eval_set, rank=rank, world=world, num_classes=num_classes,
            ignore_index=ignore_index, boundary_tolerance=cfg.boundary_tolerance,
            device=device, batch_size=cfg.eval_batch_size or cfg.batch_size, amp=cfg.amp)
        result.update({k: float(metrics[k]) for k in METRIC_KEYS})
        result["reward"] = float(reward(metrics, cfg.metric))
        result["eval_seconds"] = time.perf_counter() - t1
        if cfg.save_checkpoint and rank == 0:
            from autoloss_ray.checkpoint import save_checkpoint

            result["checkpoint"] = save_checkpoint(
                cfg.save_checkpoint, _unwrap(model).cpu(), model_name=cfg.model,
                num_classes=num_classes, dataset=cfg.dataset, image_size=cfg.image_size,
                ignore_index=ignore_index, boundary_tolerance=cfg.boundary_tolerance)
    # the final report carries a checkpoint: Ray Train's Result.metrics are those of the
    # latest checkpoint
    if rank == 0:
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": _unwrap(model).state_dict(), "iteration": done,
                        "losses": losses, "final": True}, os.path.join(d, "state.pt"))
            ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(d))
    else:
        ray.train.report(result, checkpoint=None)


def _broadcast_state(model) -> None:
    """Rank 0's parameters and buffers to every rank. Parameters agree already (DDP), but a
    BatchNorm's running statistics are only broadcast at the start of each DDP forward, so
    after the last step every rank holds its own; the evaluation (sharded) and the saved
    weights (rank 0's) must be one model."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)


def _unwrap(model):
    return getattr(model, "module", model)


def ddp_evaluate_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop of ``autoloss evaluate --workers N``: the checkpoint evaluated
    on ``dataset`` sharded over the workers; rank 0 reports the six metrics."""
    import ray.train
    import ray.train.torch

    from autoloss_ray.checkpoint import load_checkpoint
    from autoloss_ray.data import build_dataset

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    model, meta = load_checkpoint(config["checkpoint"])
    model.to(device)
    dataset = build_dataset(**config["dataset"])
    metrics = _evaluate_shard(
        model, dataset, rank=rank, world=world, num_classes=dataset.num_classes,
        ignore_index=dataset.ignore_index,
        boundary_tolerance=int(meta.get("boundary_tolerance", 5)), device=device,
        batch_size=config["batch_size"], amp=True,
        boundary_classes=config.get("boundary_classes", "all"),
        background_index=int(config.get("background_index", 0)))
    if rank == 0:
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "done"), "w").close()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
    else:
        ray.train.report(metrics, checkpoint=None)


def storage_options(storage: str) -> dict[str, Any]:
    """``RunConfig`` keywords for a storage path or URI: a URI (``s3://bucket/prefix?
    endpoint_override=...``) is opened by pyarrow once and handed over as
    ``storage_filesystem`` with its bare path, so a query in the URI (an S3-compatible server,
    as the store takes it) never ends up in Ray Train's path joins."""
    if "://" not in storage:
        return {"storage_path": storage}
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(storage)
    return {"storage_path": path, "storage_filesystem": fs}


def _wait_for_a_committed_checkpoint(*, timeout_s: float) -> None:
    """Test hook (``fail_once``): wait until the controller has committed a checkpoint.

    The controller collects the workers' reports when it polls them (every
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S = 2 s); a checkpoint whose report a dead worker never
    handed over is not committed, and the run would resume from the one before. Once one is
    committed, its checkpoint manager writes a snapshot into the run's storage: the dying
    worker waits for that file (up to ``timeout_s``; the fixed 8 s sleep before it was a guess
    that a loaded machine may outlast), then a little more for the reports of the same poll.
    Past ``timeout_s`` it dies anyway, and the test sees the run resume from scratch."""
    import ray.train

    try:
        storage = ray.train.get_context().get_storage()  # a Ray Train DeveloperAPI
        fs, path = storage.storage_filesystem, storage.checkpoint_manager_snapshot_path
    except Exception:  # noqa: BLE001 - an older/newer Ray: fall back to the polling period x 4
        time.sleep(8.0)
        return
    import pyarrow.fs as pafs

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            break
        time.sleep(0.2)
    time.sleep(1.0)


def _trainer(loop, loop_config: dict, *, name: str, workers: int, gpus_per_worker: float,
             cpus_per_worker: float, storage: str, max_failures: int):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = gpus_per_worker > 0
    resources = {"CPU": float(cpus_per_worker)}
    if use_gpu:
        resources["GPU"] = float(gpus_per_worker)
    return TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, **storage_options(storage),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )


def retrain_ddp_task(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one loss retrained by a ``TorchTrainer`` (see above)."""
    import uuid

    from ray import tune

    from trainables.proxy import _failed_result

    cfg = {"eval_split": "val", **dict(config)}
    trial, ddp = _split_config(cfg)
    try:
        ctx = tune.get_context()
        name = f"{ctx.get_experiment_name()}-{ctx.get_trial_id()}"
    except Exception:  # noqa: BLE001
        name = f"retrain-{uuid.uuid4().hex[:8]}"
    trainer = _trainer(
        ddp_train_loop, cfg, name=name, workers=int(ddp.get("workers", 2)),
        gpus_per_worker=float(ddp.get("gpus_per_worker", 0)),
        cpus_per_worker=float(ddp.get("cpus_per_worker", 1)),
        storage=ddp.get("train_storage") or os.path.join(tempfile.gettempdir(), "autoloss-train"),
        max_failures=int(ddp.get("max_failures", 2)))
    try:
        result = trainer.fit()
        metrics = dict(result.metrics or {})
        if result.error is not None:
            raise result.error
        if not metrics:
            raise RuntimeError("the Ray Train run reported no result")
    except Exception as exc:  # noqa: BLE001 - a failed loss is a row, not a crash
        metrics = _failed_result(trial, exc, "cpu" if not ddp.get("gpus_per_worker") else
                                 "cuda")
    metrics.setdefault("workers", int(ddp.get("workers", 2)))
    metrics["kind"] = "retrain"
    tune.report(metrics)


def evaluate_with_workers(checkpoint: str, dataset_kwargs: dict, *, workers: int,
                          gpus_per_worker: float, batch_size: int, storage: str,
                          boundary_classes: str = "all", background_index: int = 0) -> dict:
    """``autoloss evaluate --workers N``: the metrics of ``checkpoint`` from a TorchTrainer of
    N workers (Ray must be initialized)."""
    import uuid

    trainer = _trainer(ddp_evaluate_loop, {"checkpoint": os.path.abspath(checkpoint),
                                           "dataset": dataset_kwargs,
                                           "batch_size": batch_size,
                                           "boundary_classes": boundary_classes,
                                           "background_index": background_index},
                       name=f"evaluate-{uuid.uuid4().hex[:8]}", workers=workers,
                       gpus_per_worker=gpus_per_worker, cpus_per_worker=1, storage=storage,
                       # evaluation keeps no state, so a retry is safe; on a loaded machine
                       # Ray Train's PlacementGroupCleaner has removed a live worker group
                       # (it takes a missing state-API answer for a dead controller)
                       max_failures=1)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    from autoloss_ray.metrics import METRICS

    return {k: float(v) for k, v in result.metrics.items() if k in METRICS}
