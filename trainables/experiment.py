"""Run a whole loss search on Ray Tune: searcher + trainable + store + progress.

This is the glue the ``autoloss search`` command and ``search.py`` call. It only wires
library pieces together:

    SearchOptions -> PPO2Searcher / RandomSearcher (searchers/)
                  -> proxy_task with resources (trainables/)
                  -> StoreCallback (every finished trial -> Parquet) + ProgressCallback
                  -> tune.Tuner(...).fit()  or  tune.Tuner.restore(...).fit()
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from autoloss_ray.options import SearchOptions, is_uri
from autoloss_ray.store import ExperimentStore, PolicyWriter
from trainables.progress import ProgressCallback

__all__ = ["init_ray", "build_searcher", "build_tuner", "run_search", "SearchOutcome"]


def init_ray(address: str | None, *, verbose: int = 1) -> str | None:
    """Connect to ``address`` (or the cluster this process was submitted to) or start Ray.

    Returns the dashboard URL when one is up.
    """
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": verbose > 1}
        if address:
            ctx = ray.init(address=address, **kwargs)
        else:
            # Inside `ray job submit` RAY_ADDRESS is set and ray.init() joins that cluster;
            # otherwise this starts an embedded local Ray.
            ctx = ray.init(**kwargs)
    else:
        ctx = None
    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    return f"http://{url}" if url and not str(url).startswith("http") else url


def _space(opts: SearchOptions):
    from autoloss_ray.surrogates import search_space

    return search_space(opts.metric, opts.parameterization)


def build_searcher(opts: SearchOptions, store: ExperimentStore):
    """The Tune searcher for ``opts`` (PPO2 or the random-search baseline)."""
    from searchers import PPO2Searcher, RandomSearcher

    space = _space(opts)
    policy_writer = PolicyWriter(store.root, opts.experiment)
    if opts.searcher == "random":
        return RandomSearcher(
            space,
            metric="reward",
            mode="max",
            steps=opts.steps,
            samples_per_step=opts.samples,
            seed=opts.seed,
            step_callback=policy_writer,
        )
    points = None
    if opts.init_preset is not None:
        from autoloss_ray.presets import preset_theta

        parameterization, theta = preset_theta(opts.init_preset)
        if parameterization != opts.parameterization:
            raise ValueError(
                f"--init-preset {opts.init_preset} is a {parameterization} preset but the "
                f"search uses --parameterization {opts.parameterization}"
            )
        points = [{"theta": [float(v) for v in theta]}]
    return PPO2Searcher(
        space,
        metric="reward",
        mode="max",
        steps=opts.steps,
        samples_per_step=opts.samples,
        sigma=opts.sigma,
        clip_eps=opts.clip_eps,
        lr=opts.lr,
        update_steps=opts.update_steps,
        baseline=opts.baseline,
        failure_reward=opts.failure_reward,
        points_to_evaluate=points,
        seed=opts.seed,
        step_callback=policy_writer,
    )


def _trainable(opts: SearchOptions):
    from trainables import proxy_task, with_gpu_resources

    return with_gpu_resources(
        proxy_task, gpus_per_trial=opts.gpus_per_trial, cpus_per_trial=opts.cpus_per_trial
    )


def _callbacks(opts: SearchOptions, store: ExperimentStore) -> list:
    from trainables.store_callback import StoreCallback

    return [
        StoreCallback(store.root, opts.experiment, opts.metric),
        ProgressCallback(
            experiment=opts.experiment,
            steps=opts.steps,
            samples=opts.samples,
            stream=sys.stdout if opts.verbose else None,
        ),
    ]


def build_tuner(opts: SearchOptions, store: ExperimentStore) -> tune.Tuner:
    """A fresh Tuner, or the restored one when ``opts.resume`` and a previous run exists."""
    trainable = _trainable(opts)
    experiment_path = os.path.join(opts.tune_dir, opts.experiment)
    if opts.resume:
        if not tune.Tuner.can_restore(experiment_path):
            raise ValueError(
                f"--resume: no search to resume at {experiment_path}; run without --resume "
                "to start it"
            )
        return tune.Tuner.restore(
            experiment_path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=True,
            param_space=opts.trial_config(),
        )
    searcher = build_searcher(opts, store)
    return tune.Tuner(
        trainable,
        param_space=opts.trial_config(),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=opts.steps * opts.samples,
            max_concurrent_trials=opts.max_concurrent or opts.samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=opts.experiment,
            storage_path=opts.tune_dir,
            callbacks=_callbacks(opts, store),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


class SearchOutcome(dict):
    """Summary of a finished search: best mu, its step's mean reward, paths written."""


def run_search(opts: SearchOptions) -> SearchOutcome:
    """Run (or resume) the search described by ``opts``; returns a :class:`SearchOutcome`."""
    opts = opts.resolved()
    store = ExperimentStore(opts.store)
    if not opts.resume and not store.trials(opts.experiment).empty:
        raise ValueError(
            f"experiment {opts.experiment!r} already has trials in {opts.store}; pass --resume "
            "to continue it or choose another --experiment"
        )
    if opts.resume and not tune.Tuner.can_restore(os.path.join(opts.tune_dir, opts.experiment)):
        raise ValueError(  # checked before Ray starts or anything is written
            f"--resume: no search to resume at {os.path.join(opts.tune_dir, opts.experiment)}; "
            "run without --resume to start it"
        )
    if not is_uri(opts.tune_dir):
        Path(opts.tune_dir).mkdir(parents=True, exist_ok=True)
    url = init_ray(opts.address, verbose=opts.verbose)
    if opts.verbose:
        where = ray.get_runtime_context().gcs_address
        print(f"[autoloss] Ray at {where}" + (f", dashboard {url}" if url else ""), flush=True)
        print(
            f"[autoloss] searching a {opts.metric} surrogate ({opts.parameterization}) with "
            f"{opts.searcher}: {opts.steps} steps x {opts.samples} trials, model "
            f"{opts.model} on {opts.dataset}, store {opts.store}, experiment {opts.experiment}",
            flush=True,
        )
    start = time.monotonic()
    tuner = build_tuner(opts, store)
    tuner.fit()
    outcome = summarize(opts, store)
    outcome["seconds"] = time.monotonic() - start
    if opts.export:
        export_best(opts, store, opts.export)
        outcome["export"] = opts.export
    if opts.report_dir:
        from autoloss_ray.report import write_search_report

        outcome["report"] = write_search_report(store, opts.experiment, opts.report_dir)
    return outcome


def summarize(opts: SearchOptions, store: ExperimentStore) -> SearchOutcome:
    trials = store.trials(opts.experiment)
    policy = store.policy(opts.experiment)
    out = SearchOutcome(
        experiment=opts.experiment,
        trials=int(len(trials)),
        failed=int((trials["status"] != "ok").sum()) if len(trials) else 0,
        steps=int(len(policy)),
    )
    if len(policy):
        best = policy.loc[policy["mean_reward"].astype(float).idxmax()]
        out["best_step"] = int(best["step"])
        out["best_mean_reward"] = float(best["mean_reward"])
    if len(trials):
        from autoloss_ray.report import best_theta

        theta = best_theta(trials, policy)  # PPO: best step's mu; random: best trial
        if theta is not None:
            out["best_theta"] = [round(float(v), 6) for v in theta]
        out["best_trial_reward"] = float(trials["reward"].max())
    return out


def export_best(opts: SearchOptions, store: ExperimentStore, path: str) -> str:
    """Write the best searched loss of the experiment as a JSON file for ``from_file``."""
    from autoloss_ray.export import export_experiment

    return export_experiment(store, opts.experiment, path)
