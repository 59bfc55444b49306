"""The loss SPECs of ``autoloss retrain`` (their forms: :mod:`autoloss_app.retrain`'s docstring,
the epilog of ``autoloss retrain --help``): each resolved to a baseline name or to a loss file
that ``TrialConfig.loss`` takes, and checked against ``--metric``; all of them staged in a
temporary folder first, so that a bad SPEC leaves nothing behind, then placed next to the
weights.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

__all__ = ["LossSpec", "resolve_loss_spec", "stage_losses", "place_losses", "safe_name"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """``text`` as a file name stem: every run of other characters than letters, digits and
    ``_.-`` replaced by ``_``."""
    return _SAFE.sub("_", text)


@dataclass(frozen=True)
class LossSpec:
    label: str  # as given on the command line; the row's `loss` column
    loss: str  # what TrialConfig.loss takes: a baseline name or a loss JSON path


def resolve_loss_spec(spec: str, *, metric: str, store: str, loss_dir: str) -> LossSpec:
    """Turn a SPEC into a baseline name or a loss file (written under ``loss_dir``)."""
    from autoloss_ray.losses.baselines import BASELINES

    spec = spec.strip()
    if spec in BASELINES:
        return LossSpec(spec, spec)
    kind, _, value = spec.partition(":")
    if not _ and spec.endswith(".json"):
        kind, value = "file", spec
    safe = safe_name(spec)
    os.makedirs(loss_dir, exist_ok=True)
    if kind == "preset":
        from autoloss_ray.losses import SurrogateLoss
        from autoloss_ray.losses.presets import PRESETS

        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r} in {spec!r}; presets: {sorted(PRESETS)}")
        path = os.path.join(loss_dir, f"{safe}.json")
        SurrogateLoss.from_preset(value, num_classes=1).to_file(path, meta={"preset": value})
        return LossSpec(spec, path)
    if kind == "experiment":
        from autoloss_ray.export import export_experiment

        path = os.path.join(loss_dir, f"{safe}.json")
        export_experiment(store, value, path, num_classes=1)
        _check_file_metric(path, metric, spec)
        return LossSpec(spec, path)
    if kind == "file":
        path = os.path.abspath(value)
        if os.path.isdir(path):
            raise IsADirectoryError(f"loss file {value!r} (from {spec!r}) is a directory; give "
                                    "the .json file `autoloss export` wrote")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"loss file {value!r} (from {spec!r}) does not exist")
        _check_file_metric(path, metric, spec)
        return LossSpec(spec, path)
    raise ValueError(
        f"unknown loss {spec!r}; expected a baseline {sorted(BASELINES)}, preset:NAME, "
        "experiment:NAME or file:PATH.json"
    )


def _check_file_metric(path: str, metric: str, spec: str) -> None:
    from autoloss_ray.losses import SurrogateLoss

    loss = SurrogateLoss.from_file(path, num_classes=1)  # validates the whole file
    if loss.metric != metric:
        raise ValueError(
            f"loss {spec!r} is a {loss.metric} surrogate but --metric is {metric}; pass "
            f"--metric {loss.metric} or another loss"
        )


def stage_losses(specs: list[str], *, metric: str, store: str) -> tuple[str, list[LossSpec]]:
    """Resolve every SPEC into a new temporary staging folder: ``(folder, specs)``; the caller
    removes the folder. A bad SPEC raises and leaves nothing behind."""
    import tempfile

    from autoloss_app.options import OptionsError

    if len(set(specs)) != len(specs):
        raise OptionsError("each --loss may be given once")
    staging = tempfile.mkdtemp(prefix="autoloss-losses-")
    try:
        return staging, [resolve_loss_spec(s, metric=metric, store=store, loss_dir=staging)
                         for s in specs]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def place_losses(staging: str, staged: list[LossSpec], loss_dir: str) -> list[LossSpec]:
    """Move the staged loss files into ``loss_dir``; the specs with their final paths."""
    os.makedirs(loss_dir, exist_ok=True)
    out = []
    for spec in staged:
        if spec.loss.startswith(staging + os.sep):
            target = os.path.join(loss_dir, os.path.basename(spec.loss))
            shutil.move(spec.loss, target)
            spec = LossSpec(spec.label, target)
        out.append(spec)
    return out
