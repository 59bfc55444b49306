"""Ray Tune function trainables around :func:`autoloss_ray.train.run_trial`.

``proxy_task(config)`` trains one proxy model with the trial's loss (``metric``,
``parameterization``, ``theta`` from the searcher) and reports once, at the end, ``reward``
with the six metrics, status, timings and where it ran (``device``, ``node``, ``gpu_ids``:
comma-separated ids, "" without a GPU).
With ``progress_every > 0`` in the config it also reports progress rows (``status="running"``,
``reward`` NaN) every so many iterations.

The device is chosen from what Ray *assigned* to the trial, not from what the process can
see: a trial with 0 GPUs may inherit the parent's ``CUDA_VISIBLE_DEVICES`` (Ray 2.60), so it
runs on CPU unless ``ray.get_gpu_ids()`` is non-empty; a trial given (fake or real) GPU ids
without a usable CUDA runtime falls back to CPU and says so in ``device``.
"""

from __future__ import annotations

import math
import socket
import traceback
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["proxy_task", "retrain_task", "with_gpu_resources", "trial_device", "TrialResources"]


def trial_device(requested: str | None = "auto") -> tuple[str, list]:
    """(device for this trial, the GPU ids Ray assigned to it)."""
    import ray
    import torch

    try:
        gpu_ids = list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - outside a Ray worker
        gpu_ids = []
    if requested not in (None, "auto"):
        return str(requested), gpu_ids
    if gpu_ids and torch.cuda.is_available():
        return "cuda", gpu_ids
    return "cpu", gpu_ids


def _failed_result(config: Mapping[str, Any], exc: BaseException, device: str) -> dict:
    from autoloss_ray.train import METRIC_KEYS

    return {
        "reward": float("nan"),
        **{k: float("nan") for k in METRIC_KEYS},
        "status": "failed",
        "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000],
        "iterations": 0,
        "train_seconds": 0.0,
        "eval_seconds": 0.0,
        "device": device,
        "node": socket.gethostname(),
        "final_loss": float("nan"),
        "metric": config.get("metric", "miou"),
        "seed": config.get("seed", 0),
    }


def _run(config: Mapping[str, Any], defaults: Mapping[str, Any], kind: str) -> None:
    import ray
    from ray import tune

    from autoloss_ray.train import METRIC_KEYS, run_trial

    cfg = {**defaults, **dict(config)}
    if not cfg.pop("crn", True) and cfg.get("train_seed") is None:
        # no common random numbers: every search trial trains with a seed of its own
        # (the data and its hold-out split stay those of `seed`)
        from autoloss_ray.train import trial_train_seed

        step, sample = cfg.get("search_step"), cfg.get("search_sample")
        if step is not None and sample is not None:
            cfg["train_seed"] = trial_train_seed(int(cfg.get("seed", 0)), step, sample)
    device, gpu_ids = trial_device(cfg.get("device", "auto"))
    cfg["device"] = device
    # a comma-separated string ("0", "0,1", "" without a GPU): Tune's loggers
    # (TensorBoard) take scalars and strings, and warn on every trial for a list
    extra = {"kind": kind, "gpu_ids": ",".join(str(g) for g in gpu_ids)}
    try:
        extra["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        pass

    def progress(row: dict[str, Any]) -> None:
        tune.report(
            {
                "reward": float("nan"),
                **{k: float("nan") for k in METRIC_KEYS},
                "status": "running",
                **row,
            }
        )

    try:
        result = run_trial(cfg, progress=progress)
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, never fatal
        result = _failed_result(cfg, exc, device)
    result.update(extra)
    if result.get("reward") is not None and not math.isfinite(result["reward"]):
        result["reward"] = float("nan")
    tune.report(result)


def proxy_task(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one proxy trial (hold-out reward)."""
    _run(config, {}, "search")


def retrain_task(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train on the whole ``split`` and evaluate on
    ``eval_split`` (default ``"val"``), e.g. to retrain with a searched loss."""
    _run(config, {"eval_split": "val"}, "retrain")


class TrialResources:
    """Picklable ``config -> resources`` that decides CPU-only fallback when a trial starts
    (for trainables wrapped before ``ray.init``)."""

    def __init__(self, gpus_per_trial: float, cpus_per_trial: float) -> None:
        self.gpus_per_trial = gpus_per_trial
        self.cpus_per_trial = cpus_per_trial

    def __call__(self, config: Mapping[str, Any] | None = None):
        from ray import tune

        res = _resources(self.gpus_per_trial, self.cpus_per_trial)
        return tune.PlacementGroupFactory([{k.upper(): v for k, v in res.items()}])


def _resources(gpus_per_trial: float, cpus_per_trial: float) -> dict[str, float]:
    import ray

    if gpus_per_trial > 0 and ray.is_initialized():
        if ray.cluster_resources().get("GPU", 0) <= 0:
            import warnings

            warnings.warn(
                f"gpus_per_trial={gpus_per_trial} but the Ray cluster has no GPU: trials run "
                "on CPU",
                stacklevel=3,
            )
            gpus_per_trial = 0
    return {"cpu": float(cpus_per_trial), "gpu": float(gpus_per_trial)}


def with_gpu_resources(
    trainable: Callable | None = None,
    *,
    gpus_per_trial: float = 1.0,
    cpus_per_trial: float = 1,
):
    """``tune.with_resources(trainable, {"cpu": ..., "gpu": ...})`` (default: proxy_task).

    One GPU per trial by default; fractions (0.5, 0.25) pack several trials on one GPU; 0 or
    a cluster without GPUs gives CPU-only trials. Both keys are always named (a "gpu"-only
    request would give the trial 0 CPUs). If Ray is not initialised yet, the decision is
    taken when each trial starts.
    """
    from ray import tune

    from autoloss_ray.options import check_resources

    check_resources(gpus_per_trial, cpus_per_trial, flags=False)  # a ValueError
    trainable = proxy_task if trainable is None else trainable
    import ray

    if ray.is_initialized():
        return tune.with_resources(trainable, _resources(gpus_per_trial, cpus_per_trial))
    return tune.with_resources(trainable, TrialResources(gpus_per_trial, cpus_per_trial))
