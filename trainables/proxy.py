"""Ray Tune function trainables around :func:`autoloss_ray.train.run_trial`.

``proxy_task(config)`` trains one proxy model with the trial's loss (``metric``,
``parameterization``, ``theta`` from the searcher) and reports once, at the end, ``reward``
with the six metrics, status, timings and where it ran (``device``, ``node``, ``gpu_ids``:
comma-separated ids, "" without a GPU).
With ``progress_every > 0`` in the config it also reports progress rows (``status="running"``,
``reward`` NaN) every so many iterations; with ``rungs`` (multi-fidelity, ``--scheduler asha``)
it reports the hold-out reward at each rung (``rung_reward`` at ``rung_iteration``, also as
``reward``), and every other result carries ``rung_reward`` NaN (Tune checks that each result
holds the scheduler's metric).

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

__all__ = [
    "proxy_task", "playoff_task", "retrain_task", "with_gpu_resources", "trial_device",
    "TrialResources", "embedded_ray",
]


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
        extra["node_ip"] = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001
        pass

    # multi-fidelity: Tune's strict metric check wants ASHA's metric in every result; only
    # the rung rows carry its time attribute (rung_iteration), so only they count for it
    rung_nan = {"rung_reward": float("nan")} if cfg.get("rungs") else {}

    def progress(row: dict[str, Any]) -> None:
        tune.report(
            {
                "reward": float("nan"),
                **{k: float("nan") for k in METRIC_KEYS},
                "status": "running",
                **rung_nan,
                **row,
            }
        )

    try:
        result = run_trial(cfg, progress=progress)
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, never fatal
        result = _failed_result(cfg, exc, device)
    result.update(extra)
    for key, value in rung_nan.items():
        result.setdefault(key, value)
    if result.get("reward") is not None and not math.isfinite(result["reward"]):
        result["reward"] = float("nan")
    tune.report(result)


def proxy_task(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one proxy trial (hold-out reward)."""
    _run(config, {}, "search")


def playoff_task(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: a proxy trial of a search's playoff (its answer rule
    ``playoff``: a candidate theta re-trained with a fresh ``train_seed``); rows of kind
    ``playoff``."""
    _run(config, {}, "playoff")


def retrain_task(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train on the whole ``split`` and evaluate on
    ``eval_split`` (default ``"val"``), e.g. to retrain with a searched loss."""
    _run(config, {"eval_split": "val"}, "retrain")


class TrialResources:
    """Picklable ``config -> resources`` that decides the CPU-only fallback when a trial
    starts (for trainables wrapped before ``ray.init``)."""

    def __init__(self, gpus_per_trial: float, cpus_per_trial: float) -> None:
        self.gpus_per_trial = gpus_per_trial
        self.cpus_per_trial = cpus_per_trial

    def __call__(self, config: Mapping[str, Any] | None = None):
        from ray import tune

        res = _resources(self.gpus_per_trial, self.cpus_per_trial)
        return tune.PlacementGroupFactory([{k.upper(): v for k, v in res.items()}])


def embedded_ray() -> bool:
    """Whether this process started the Ray it is connected to (``ray.init()`` with no
    cluster to join), as opposed to joining a cluster (``--address``, a Ray job, a head)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return bool(ray.is_initialized() and node is not None and node.head)


def _max_cluster_gpus() -> float | None:
    """GPUs the cluster's autoscaler could ever provide, when Ray publishes its config
    (autoscaler v2); None when unknown (autoscaler v1, no autoscaler)."""
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: unknown is fine
        return None
    return None if most is None else float(most.get("GPU", 0))


def _resources(gpus_per_trial: float, cpus_per_trial: float) -> dict[str, float]:
    """The trial's resources: what was asked for, except on an embedded local Ray without a
    GPU, where trials run on CPU (a laptop run of the GPU default).

    On a cluster that was joined, the GPU request stands even when no GPU node is up yet: the
    autoscaler sees the pending trials' GPU demand and starts GPU workers (gpu.yaml has none
    at start). A cluster whose autoscaler config says it can never have a GPU is refused.
    """
    import ray

    if gpus_per_trial > 0 and ray.is_initialized():
        if ray.cluster_resources().get("GPU", 0) <= 0:
            import warnings

            if embedded_ray():
                warnings.warn(
                    f"gpus_per_trial={gpus_per_trial} but the local Ray has no GPU: trials "
                    "run on CPU",
                    stacklevel=3,
                )
                gpus_per_trial = 0
            elif _max_cluster_gpus() == 0:
                raise ValueError(
                    f"gpus_per_trial={gpus_per_trial} but the Ray cluster has no GPU and its "
                    "autoscaler config has no GPU node type; pass --gpus-per-trial 0 to run "
                    "the trials on CPU"
                )
            else:
                warnings.warn(
                    f"gpus_per_trial={gpus_per_trial}: the Ray cluster has no GPU node yet; "
                    "the trials wait for the autoscaler to start GPU workers (pass "
                    "--gpus-per-trial 0 to run them on CPU)",
                    stacklevel=3,
                )
    return {"cpu": float(cpus_per_trial), "gpu": float(gpus_per_trial)}


def with_gpu_resources(
    trainable: Callable | None = None,
    *,
    gpus_per_trial: float = 1.0,
    cpus_per_trial: float = 1,
):
    """``tune.with_resources(trainable, {"cpu": ..., "gpu": ...})`` (default: proxy_task).

    One GPU per trial by default; fractions (0.5, 0.25) pack several trials on one GPU; 0
    gives CPU-only trials, and so does an embedded local Ray without a GPU; on a joined
    cluster the GPU request stands (the autoscaler adds GPU nodes for it). Both keys are always named (a "gpu"-only
    request would give the trial 0 CPUs). If Ray is not initialised yet, the decision is
    taken when each trial starts.
    """
    from ray import tune

    from autoloss_ray.validation import check_resources

    check_resources(gpus_per_trial, cpus_per_trial, flags=False)  # a ValueError
    trainable = proxy_task if trainable is None else trainable
    import ray

    if ray.is_initialized():
        return tune.with_resources(trainable, _resources(gpus_per_trial, cpus_per_trial))
    return tune.with_resources(trainable, TrialResources(gpus_per_trial, cpus_per_trial))
