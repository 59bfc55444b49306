"""The proxy task without Ray: train a network with one loss, evaluate all six metrics.

``run_trial(config)`` is what every search trial runs (``trainables.proxy_task`` wraps it):

1. build the dataset, split off the hold-out part (seeded), build the model and the loss
   (``SurrogateLoss(metric, parameterization, theta)`` by default, a baseline name, or a
   loss JSON file), all validated before any compute;
2. iteration-based SGD with the paper's proxy recipe (lr 0.02, poly 0.9 down to 1e-4,
   momentum 0.9, weight decay 5e-4, head lr x10, batch 32, 128x128, 1000 iterations; every
   value is a config key), bf16/fp16 autocast on CUDA, the loss itself computed in fp32;
   on CUDA by default (each a config key, ``None`` = auto, ``False`` switches it off):
   ``channels_last`` model and images, ``data_on_device`` (the train split decoded once and
   kept on the device, batches made there: :mod:`autoloss_ray.data.device`),
   ``cudnn_benchmark`` (cuDNN picks its algorithms by timing: faster, not reproducible run to
   run) and ``check_every`` = 50 (the loss stays on the device and the host reads it every K
   iterations, so the loop never waits for the GPU; a non-finite loss is then found up to K-1
   steps late, and ``iterations`` still counts up to the first one). CPU defaults keep the
   DataLoader, no autocast (``amp_cpu`` turns bf16 autocast on) and a check every iteration,
   so CPU results are those of before;
3. a NaN/inf loss stops training: the trial is returned with ``status="nan"`` (recorded, no
   exception); a runtime error during compute (e.g. CUDA out of memory) gives
   ``status="failed"`` with the error text;
4. exact metrics on the hold-out split with ``MetricAccumulator``; ``reward`` is the
   configured metric (a sum for specs like ``"miou+biou"``). ``eval_protocol="native"``
   (default) scores every label map at its own resolution (the argmax of the logits upsampled
   bilinearly, ``align_corners=False``, to the label; the model sees the whole image at
   ``inference_size``); ``"train_size"`` scores image and label resized to ``image_size``
   (cheaper; the result says which in ``eval_protocol``).

Deterministic given ``seed`` on CPU (same thread count); on CUDA cuDNN is put in
deterministic mode but some kernels (bilinear upsampling backward) stay non-deterministic.

This module holds the loop itself (:func:`run_trial`); its parts live in
:mod:`autoloss_ray.trial` (config, build, loop pieces, evaluation) and every public name
stays importable from here.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from autoloss_ray.metrics import METRICS
from autoloss_ray.trial.build import build_data, build_loss, resolve_device
from autoloss_ray.trial.config import TrialConfig, check_trial_config, trial_train_seed

# _InfiniteSampler, _collate_by_size and _autocast are also imported from here by
# trainables.retrain_ddp, which runs the same recipe under Ray Train
from autoloss_ray.trial.evaluation import _collate_by_size as _collate_by_size
from autoloss_ray.trial.evaluation import evaluate_model
from autoloss_ray.trial.loop import (
    _autocast,
    _device_name,
    _first_nonfinite,
    _speed_options,
    _sync,
    _train_batches,
)
from autoloss_ray.trial.loop import (
    _InfiniteSampler as _InfiniteSampler,
)

__all__ = ["TrialConfig", "check_trial_config", "run_trial", "evaluate_model", "resolve_device",
           "build_loss", "build_data", "trial_train_seed", "METRIC_KEYS"]

METRIC_KEYS = METRICS  # the six metric names (one definition: autoloss_ray.metrics)


def run_trial(
    config: Mapping[str, Any] | TrialConfig,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one proxy model; see the module docstring.

    Returns a dict with ``reward``, the six metrics, ``status`` ("ok", "nan", "failed"),
    ``error``, ``iterations`` (completed), ``train_seconds``, ``eval_seconds``, ``device``,
    ``device_name``, ``node``, ``final_loss`` (mean of the last 10 losses),
    ``initial_loss`` (mean of the first 10), ``images_per_second`` and the sizes of the
    splits. Bad configuration raises ValueError/TypeError/FileNotFoundError before compute.
    ``progress`` (optional) is called every ``progress_every`` iterations with
    ``{"iteration", "loss", "lr"}``, and after each iteration of ``rungs`` (multi-fidelity)
    with the hold-out reward scored at the training size (``eval_protocol="train_size"``,
    whatever the final protocol): ``{"iteration", "iterations", "rung_iteration", "reward",
    "rung_reward", "eval_protocol", <six metrics>}``; a rung changes no random state, so the final result
    is that of the same config without rungs (``rung_seconds`` says what the rungs cost;
    ``train_seconds`` excludes it).
    """
    from autoloss_ray.metrics import reward
    from autoloss_ray.models import build_model, param_groups

    cfg = check_trial_config(config)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)

    # --- everything that can fail on bad input, before any compute -------------------
    train_set, eval_set = build_data(cfg)
    num_classes, ignore_index = train_set.num_classes, train_set.ignore_index
    criterion = build_loss(cfg, num_classes, ignore_index, train_set)
    train_seed = cfg.seed if cfg.train_seed is None else int(cfg.train_seed)
    torch.manual_seed(train_seed)
    np.random.seed(train_seed % (2**32))
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = cfg.deterministic
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark is not False
    model = build_model(cfg.model, num_classes=num_classes, backbone_weights=cfg.backbone_weights)

    result: dict[str, Any] = {
        "reward": float("nan"),
        **{k: float("nan") for k in METRIC_KEYS},
        "status": "ok",
        "error": None,
        "iterations": 0,
        "train_seconds": 0.0,
        "eval_seconds": 0.0,
        "device": device.type if device.index is None else f"{device.type}:{device.index}",
        "device_name": _device_name(device),
        "node": socket.gethostname(),
        "final_loss": float("nan"),
        "initial_loss": float("nan"),
        "images_per_second": float("nan"),
        "num_train": len(train_set),
        "num_eval": len(eval_set),
        "num_classes": num_classes,  # the task's class count (``autoloss export`` reads it)
        "metric": cfg.metric,
        "seed": cfg.seed,
        "train_seed": train_seed,
        "eval_protocol": cfg.eval_protocol,
    }
    if cfg.eval_protocol == "native":
        result["inference_size"] = (cfg.inference_size if cfg.inference_size is not None
                                    else "short_side")
    model.to(device)
    criterion.to(device)
    optimizer = torch.optim.SGD(
        param_groups(model, cfg.lr, cfg.head_lr_mult),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    speed = _speed_options(cfg, device)
    from autoloss_ray.losses.surrogate import SurrogateLoss

    # surrogates read bf16 logits themselves and sum in float32; other losses get fp32 logits
    raw_logits = isinstance(criterion, SurrogateLoss)
    if raw_logits:  # the curve tables' copy to the device happens here, not in the loop
        criterion.prepare(device, torch.float32)
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    # the loss of every iteration stays on the device; the host reads it every K iterations
    loss_log = torch.full((cfg.iterations,), float("nan"), dtype=torch.float64, device=device)
    K = speed["check_every"]
    rungs = set(cfg.rungs)
    rung_eval_set = None
    if rungs:  # the rungs score the same hold-out images at the training size (cheap)
        rung_eval_set = eval_set if cfg.eval_protocol == "train_size" else build_data(
            dataclasses.replace(cfg, eval_protocol="train_size"))[1]
        result["rung_seconds"] = 0.0
    try:
        # (decoding the dataset onto the device, if asked, is not part of train_seconds)
        batches = _train_batches(cfg, train_set, device, speed, train_seed,
                                 eval_sets=(eval_set, rung_eval_set))
        _sync(device)
        start = time.perf_counter()
        model.train()
        done = 0
        for it, (images, labels) in enumerate(batches):
            factor = (1.0 - it / cfg.iterations) ** cfg.poly_power
            for group in optimizer.param_groups:
                group["lr"] = (group["initial_lr"] - cfg.min_lr) * factor + cfg.min_lr
            with _autocast(device, cfg.amp, cpu=cfg.amp_cpu):
                logits = model(images)
            # surrogates take any float logits and compute in float32 themselves; others in fp32
            loss = criterion(logits if raw_logits else logits.float(), labels)
            loss_log[it] = loss.detach()
            if K == 1:  # read before the step: a non-finite loss never reaches the weights
                bad = _first_nonfinite(loss_log, it, it + 1)
                if bad is not None:
                    result["status"] = "nan"
                    result["error"] = f"loss became {bad[1]} at iteration {bad[0]}"
                    break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done = it + 1
            if K > 1 and (done % K == 0 or done == cfg.iterations):
                bad = _first_nonfinite(loss_log, done - ((done - 1) % K) - 1, done)
                if bad is not None:
                    result["status"] = "nan"
                    result["error"] = f"loss became {bad[1]} at iteration {bad[0]}"
                    done = bad[0]
                    break
            if done in rungs and (K == 1 or done % K == 0 or _first_nonfinite(
                    loss_log, done - done % K, done) is None):
                rung_start = time.perf_counter()
                row = _rung_result(cfg, model, rung_eval_set, num_classes, ignore_index, device,
                                   done)
                result["rung_seconds"] += time.perf_counter() - rung_start
                if progress is not None:
                    progress(row)
            if progress is not None and cfg.progress_every and done % cfg.progress_every == 0:
                progress({"iteration": done, "loss": float(loss_log[it]),
                          "lr": optimizer.param_groups[0]["lr"]})
        result["iterations"] = done
        _sync(device)
        train_seconds = time.perf_counter() - start - result.get("rung_seconds", 0.0)
        result["train_seconds"] = train_seconds
        if result["iterations"]:
            result["images_per_second"] = result["iterations"] * cfg.batch_size / max(
                train_seconds, 1e-9
            )
        losses = loss_log[:done].cpu().numpy()
        if losses.size:
            result["initial_loss"] = float(np.mean(losses[:10]))
            result["final_loss"] = float(np.mean(losses[-10:]))
        if result["status"] == "ok" and not all(
            bool(torch.isfinite(p).all()) for p in model.parameters()
        ):
            result["status"] = "nan"
            result["error"] = "model parameters became non-finite during training"
        if result["status"] != "ok":
            return result

        # --- evaluation on the hold-out split ------------------------------------------
        start = time.perf_counter()
        metrics = evaluate_model(
            model, eval_set, num_classes=num_classes, ignore_index=ignore_index,
            boundary_tolerance=cfg.boundary_tolerance, device=device,
            batch_size=cfg.eval_batch_size or cfg.batch_size, num_workers=cfg.num_workers,
            amp=cfg.amp,
        )
        if cfg.save_checkpoint:
            from autoloss_ray.checkpoint import save_checkpoint

            result["checkpoint"] = save_checkpoint(
                cfg.save_checkpoint, model, model_name=cfg.model, num_classes=num_classes,
                dataset=cfg.dataset, image_size=cfg.image_size, ignore_index=ignore_index,
                boundary_tolerance=cfg.boundary_tolerance,
            )
        result["eval_seconds"] = time.perf_counter() - start
        for k in METRIC_KEYS:
            result[k] = float(metrics[k])
        result["reward"] = float(reward(metrics, cfg.metric))
    except RuntimeError as exc:  # e.g. CUDA out of memory: record, do not crash the search
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    return result


def _rung_result(cfg: TrialConfig, model: torch.nn.Module, eval_set, num_classes: int,
                 ignore_index: int, device: torch.device, done: int) -> dict[str, Any]:
    """The hold-out reward after ``done`` iterations, scored at the training size: the
    progress row ``{"iteration", "iterations", "rung_iteration", "reward", "rung_reward",
    "eval_protocol": "train_size", <six metrics>}``.

    Every random state (torch, CUDA, numpy, ``random``) is saved before and restored after,
    and the model goes back to train mode, so training goes on exactly as without the rung
    (on CPU the final result is bit-identical)."""
    from autoloss_ray.metrics import reward

    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
              torch.cuda.get_rng_state_all() if device.type == "cuda" else None)
    try:
        metrics = evaluate_model(
            model, eval_set, num_classes=num_classes, ignore_index=ignore_index,
            boundary_tolerance=cfg.boundary_tolerance, device=device,
            batch_size=cfg.eval_batch_size or cfg.batch_size, num_workers=0, amp=cfg.amp,
        )
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
    value = float(reward(metrics, cfg.metric))
    return {"iteration": done, "iterations": done, "rung_iteration": done, "reward": value,
            "rung_reward": value, "eval_protocol": "train_size",
            **{k: float(metrics[k]) for k in METRIC_KEYS}}
