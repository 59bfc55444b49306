"""Turn a searched experiment of the store into a loss file any PyTorch project can load.

``export_experiment(store, "demo", "miou-loss.json")`` writes the search's answer (the rule its
manifest records, :mod:`autoloss_ray.answer`: the best trial, the playoff's winner or PPO2's
policy mean; a search from before ``--answer``: PPO2's policy mean, random search, TPE and
CMA-ES the best trial) as a JSON file for
``SurrogateLoss.from_file``, for the class count the search recorded
(:func:`recorded_num_classes`; a store without one needs ``num_classes``). No ray import.
"""

from __future__ import annotations

import json
import os
from typing import Any

from autoloss_ray.vocabulary import DEFAULT_BOUNDARY_TOLERANCE, DEFAULT_PARAMETERIZATION

__all__ = ["export_experiment", "experiment_loss", "recorded_num_classes"]


def _search_config(trials) -> dict[str, Any]:
    search = trials[trials["kind"] == "search"] if "kind" in trials.columns else trials
    if not len(search):
        search = trials
    raw = search["config_json"].dropna()
    return json.loads(raw.iloc[0]) if len(raw) else {}


def recorded_num_classes(trials) -> int | None:
    """The class count a search's trials record: ``num_classes`` of their config (a user task,
    ``--num-classes``), else the one each proxy trial reports (``extra_json``), else None.
    Nothing is built to find it."""
    config = _search_config(trials)
    if config.get("num_classes") is not None:
        return int(config["num_classes"])
    rows = trials[trials["kind"] == "search"] if "kind" in trials.columns else trials
    for raw in rows["extra_json"].dropna() if "extra_json" in rows.columns else ():
        try:
            value = json.loads(raw).get("num_classes")
        except (ValueError, AttributeError):
            continue
        if value is not None:
            return int(value)
    return None


def _searches(store: Any) -> list[str]:
    """The experiments of ``store`` with search rows (what experiment:NAME may name)."""
    trials = store.trials()
    if not len(trials) or "kind" not in trials:
        return []
    return sorted(set(trials.loc[trials["kind"] == "search", "experiment"].astype(str)))


def experiment_loss(store: Any, experiment: str, *, num_classes: int | None = None,
                    trials: Any = None, policy: Any = None):
    """The best searched ``SurrogateLoss`` of ``experiment`` and a dict describing it.

    ``trials`` / ``policy``: the experiment's store rows when the caller has just read them
    (:meth:`ExperimentStore.trials` / ``.policy`` of ``experiment``); else they are read."""
    from autoloss_ray.answer import answer_origin, manifest_answer
    from autoloss_ray.losses.surrogate import SurrogateLoss
    from autoloss_ray.report import best_theta, unrecorded_answer
    from autoloss_ray.store import ExperimentStore, ok_mask

    store = store if isinstance(store, ExperimentStore) else ExperimentStore(store)
    trials = store.trials(experiment) if trials is None else trials
    if not len(trials):
        known = ", ".join(store.experiments()) or "none"
        raise ValueError(
            f"experiment {experiment!r} has no trials in store {store.root}; "
            f"experiments there: {known}"
        )
    kinds = sorted(set(trials["kind"].dropna().astype(str))) if "kind" in trials else []
    if kinds and "search" not in kinds:
        raise ValueError(
            f"experiment {experiment!r} is a {' and '.join(kinds)} experiment, not a search: "
            f"it holds no searched loss (experiment:NAME and export take a search's name; "
            f"searches there: {', '.join(_searches(store)) or 'none'})"
        )
    if not ok_mask(trials).any():
        raise ValueError(
            f"experiment {experiment!r} has no successful trial to export (all "
            f"{len(trials)} failed; first error: {trials['error'].dropna().head(1).tolist()})"
        )
    policy = store.policy(experiment) if policy is None else policy
    answer = manifest_answer(store.read_search(experiment), policy)
    theta = best_theta(trials, policy, answer=answer)
    if theta is None:
        raise ValueError(f"experiment {experiment!r} has no successful trial to export")
    config = _search_config(trials)
    recorded = {k: trials[k].dropna() for k in ("metric", "parameterization")}
    metric = config.get("metric") or (str(recorded["metric"].iloc[0])
                                      if len(recorded["metric"]) else None)
    if metric is None:
        raise ValueError(f"experiment {experiment!r} records no metric; its trials' config "
                         "needs a 'metric' key (or the StoreCallback its metric_spec)")
    # a trainable of one's own may leave it out: search_space's default, as the searcher used
    parameterization = config.get("parameterization") or (
        str(recorded["parameterization"].iloc[0]) if len(recorded["parameterization"])
        else DEFAULT_PARAMETERIZATION)
    if num_classes is None:
        num_classes = recorded_num_classes(trials)
    if num_classes is None:
        raise ValueError(
            f"experiment {experiment!r} records no class count (a store of an older version); "
            "pass it: num_classes=C (autoloss export --num-classes C)"
        )
    loss = SurrogateLoss(
        metric,
        num_classes=int(num_classes),
        parameterization=parameterization,
        theta=theta,
        boundary_tolerance=int(config.get("boundary_tolerance", DEFAULT_BOUNDARY_TOLERANCE)),
    )
    meta: dict[str, Any] = {"experiment": experiment, "store": str(store.root)}
    if answer is not None:
        meta["answer"] = answer
    # where the exported theta comes from: the trial, the policy step or the playoff winner
    meta.update(answer_origin(trials, policy, answer or unrecorded_answer(policy)))
    meta.update(dataset=config.get("dataset"), model=config.get("model"))
    if config.get("task") is not None:  # a search_loss search of the user's own function
        meta["task"] = config["task"]
    return loss, meta


def export_experiment(
    store: Any, experiment: str, path: str | os.PathLike[str], *, num_classes: int | None = None,
    trials: Any = None, policy: Any = None,
) -> str:
    """Write the experiment's best loss to ``path`` (JSON); returns the path. ``trials`` /
    ``policy``: as :func:`experiment_loss` takes them."""
    loss, meta = experiment_loss(store, experiment, num_classes=num_classes, trials=trials,
                                 policy=policy)
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    loss.to_file(path, meta=meta)
    return path
