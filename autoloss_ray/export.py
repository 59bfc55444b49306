"""Turn a searched experiment of the store into a loss file any PyTorch project can load.

``export_experiment(store, "demo", "miou-loss.json")`` writes the mu of the PPO step with the
best mean reward (random search, TPE, CMA-ES: the best trial's theta) as a JSON file for
``SurrogateLoss.from_file``. No ray import.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["export_experiment", "experiment_loss"]


def _search_config(trials) -> dict[str, Any]:
    search = trials[trials["kind"] == "search"] if "kind" in trials.columns else trials
    if not len(search):
        search = trials
    raw = search["config_json"].dropna()
    return json.loads(raw.iloc[0]) if len(raw) else {}


def experiment_loss(store: Any, experiment: str, *, num_classes: int | None = None):
    """The best searched ``SurrogateLoss`` of ``experiment`` and a dict describing it."""
    from autoloss_ray.losses.surrogate import SurrogateLoss
    from autoloss_ray.report import best_theta
    from autoloss_ray.store import ExperimentStore, ok_mask

    store = store if isinstance(store, ExperimentStore) else ExperimentStore(store)
    trials = store.trials(experiment)
    if not len(trials):
        known = ", ".join(store.experiments()) or "none"
        raise ValueError(
            f"experiment {experiment!r} has no trials in store {store.root}; "
            f"experiments there: {known}"
        )
    if not ok_mask(trials).any():
        raise ValueError(
            f"experiment {experiment!r} has no successful trial to export (all "
            f"{len(trials)} failed; first error: {trials['error'].dropna().head(1).tolist()})"
        )
    policy = store.policy(experiment)
    theta = best_theta(trials, policy)
    if theta is None:
        raise ValueError(f"experiment {experiment!r} has no successful trial to export")
    config = _search_config(trials)
    metric = config.get("metric") or str(trials["metric"].dropna().iloc[0])
    parameterization = config.get("parameterization") or str(
        trials["parameterization"].dropna().iloc[0]
    )
    if num_classes is None:
        num_classes = config.get("num_classes")
    if num_classes is None:
        from autoloss_ray.data import build_dataset

        dataset = build_dataset(
            config.get("dataset", "synthetic"), root=config.get("data_root"), split="train",
            image_size=int(config.get("image_size") or 64), train=False,
        )
        num_classes = int(dataset.num_classes)
    loss = SurrogateLoss(
        metric,
        num_classes=int(num_classes),
        parameterization=parameterization,
        theta=theta,
        boundary_tolerance=int(config.get("boundary_tolerance", 5)),
    )
    meta: dict[str, Any] = {"experiment": experiment, "store": str(store.root)}
    if len(policy):
        best = policy.loc[policy["mean_reward"].astype(float).idxmax()]
        meta.update(step=int(best["step"]), mean_reward=float(best["mean_reward"]))
    meta.update(dataset=config.get("dataset"), model=config.get("model"))
    return loss, meta


def export_experiment(
    store: Any, experiment: str, path: str | os.PathLike[str], *, num_classes: int | None = None
) -> str:
    """Write the experiment's best loss to ``path`` (JSON); returns the path."""
    loss, meta = experiment_loss(store, experiment, num_classes=num_classes)
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    loss.to_file(path, meta=meta)
    return path
