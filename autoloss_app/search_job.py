"""The search job: run a whole loss search on Ray Tune (searcher + trainable + store +
progress). ``autoloss search`` and ``search.py`` call :func:`run_search`; its resume part
(manifest, option check, replayed trials) is :mod:`autoloss_app.resume`, and Ray is joined or
started by :func:`autoloss_app.ray_start.init_ray` (importable from here too). It only wires
library pieces together:

    SearchOptions -> PPO2Searcher / RandomSearcher / TPESearcher / CMAESSearcher (searchers/)
                  -> proxy_task with resources (trainables/)
                  -> StoreCallback (every finished trial -> Parquet) + ProgressCallback
                  -> tune.Tuner(...).fit()  (resume: the searcher replays the store first)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from autoloss_app.option_checks import is_uri
from autoloss_app.options import OptionsError, SearchOptions, ppo2_config
from autoloss_app.ray_start import init_ray
from autoloss_app.resume import (
    check_resume_options,
    check_search_start,
    previous_results,
    search_manifest,
)
from autoloss_ray.store import ExperimentStore, PolicyWriter, failed_mask, ok_mask
from trainables.progress import ProgressCallback

__all__ = [
    "init_ray", "build_searcher", "build_tuner", "run_search", "SearchOutcome",
    "check_resume_options", "previous_results", "search_manifest", "first_failed_step",
    "SearchInterrupted", "check_search_data",
]


def _space(opts: SearchOptions):
    from autoloss_ray.losses import search_space

    return search_space(opts.metric, opts.parameterization)


def check_searcher_installed(searcher: str) -> None:
    """Raise :class:`OptionsError` (one sentence) when ``searcher`` needs a missing package."""
    from searchers.optuna_search import require_optuna

    try:
        require_optuna(searcher)
    except ImportError as e:
        raise OptionsError(str(e)) from None


def build_searcher(opts: SearchOptions, store: ExperimentStore):
    """The Tune searcher for ``opts`` (:func:`_new_searcher`); with ``--scheduler asha`` it
    ranks the samples a rung stopped below their step's survivors (``rank_stopped``)."""
    searcher = _new_searcher(opts, store)
    searcher.rank_stopped = getattr(opts, "scheduler", "fifo") == "asha"
    return searcher


def replayed_searcher(opts: SearchOptions, store: ExperimentStore, results) -> tuple[Any, int]:
    """(the searcher of ``opts``, how many trials it was told): a resumed search's searcher
    fast-forwarded through the stored ``results`` (``previous_results``), its policy steps
    not written again."""
    searcher = build_searcher(opts, store)
    if not results:
        return searcher, 0
    policy = store.policy(opts.experiment)
    return searcher, searcher.replay(results, quiet_steps={int(s) for s in policy["step"]})


def _new_searcher(opts: SearchOptions, store: ExperimentStore):
    """The Tune searcher for ``opts``: PPO2, random search, or optuna's TPE / CMA-ES.

    TPE and CMA-ES (:mod:`searchers.optuna_search`) start at the space's init (or
    ``--init-preset``) as their first trial, take ``--sigma`` as CMA-ES's initial step size,
    run in steps of M like PPO2 and answer with the best trial's theta.
    """
    from searchers import PPO2Searcher, RandomSearcher

    common = dict(
        metric="reward",
        mode="max",
        steps=opts.steps,
        samples_per_step=opts.samples,
        seed=opts.seed,
        step_callback=PolicyWriter(store.root, opts.experiment),
    )
    if opts.searcher == "random":
        return RandomSearcher(_space(opts), **common)
    points = None
    if opts.init_preset is not None:
        from autoloss_ray.losses.presets import preset_theta

        parameterization, theta = preset_theta(opts.init_preset)
        if parameterization != opts.parameterization:
            raise ValueError(
                f"--init-preset {opts.init_preset} is a {parameterization} preset but the "
                f"search uses --parameterization {opts.parameterization}"
            )
        points = [{"theta": [float(v) for v in theta]}]
    if opts.searcher in ("tpe", "cmaes"):
        check_searcher_installed(opts.searcher)
        from searchers.optuna_search import CMAESSearcher, TPESearcher

        cls = TPESearcher if opts.searcher == "tpe" else CMAESSearcher
        return cls(_space(opts), sigma=opts.sigma, failure_reward=opts.failure_reward,
                   points_to_evaluate=points, **common)
    return PPO2Searcher(
        _space(opts),
        config=ppo2_config(opts),  # with baseline "mu", sample 0 of every step is mu itself
        failure_reward=opts.failure_reward,
        points_to_evaluate=points,
        **common,
    )


def _trainable(opts: SearchOptions):
    from trainables import proxy_task, with_gpu_resources

    return with_gpu_resources(
        proxy_task, gpus_per_trial=opts.gpus_per_trial, cpus_per_trial=opts.cpus_per_trial
    )


def _callbacks(opts: SearchOptions, store: ExperimentStore, previous=None) -> list:
    from trainables.store_callback import StoreCallback

    progress = ProgressCallback(
        experiment=opts.experiment,
        steps=opts.steps,
        samples=opts.samples,
        stream=sys.stdout if opts.verbose else None,
    )
    if previous is not None and len(previous):
        progress.count_previous(previous)
    return [StoreCallback(store.root, opts.experiment, opts.metric), progress]


def build_tuner(
    opts: SearchOptions,
    store: ExperimentStore,
    *,
    searcher: Any = None,
    num_samples: int | None = None,
    previous=None,
    trainable: Any = None,
) -> tune.Tuner:
    """The Tuner of a search: ``searcher`` (default: a fresh one from ``opts``) hands out
    ``num_samples`` trials (default ``steps * samples``); ``previous`` (store rows of a
    resumed search) only seeds the progress counts; ``trainable`` (default: the proxy task
    with ``opts``' resources; ``search_loss`` gives the user's task)."""
    if searcher is None:
        searcher = build_searcher(opts, store)
    return tune.Tuner(
        _trainable(opts) if trainable is None else trainable,
        param_space=opts.trial_config(),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=num_samples if num_samples is not None else opts.steps * opts.samples,
            max_concurrent_trials=opts.max_concurrent or opts.samples,
            reuse_actors=True,
            scheduler=build_scheduler(opts),
        ),
        run_config=tune.RunConfig(
            name=opts.experiment,
            storage_path=opts.tune_dir,
            callbacks=_callbacks(opts, store, previous),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


def build_scheduler(opts: SearchOptions) -> Any:
    """Tune's trial scheduler of a search: None (FIFO) or, with ``--scheduler asha``, Ray's
    ``ASHAScheduler`` on the rung reports of the proxy trial (``rung_reward`` at
    ``rung_iteration``, which the final result does not carry, so a trial that trains to the
    end is never counted as stopped); its milestones are the trials' ``rungs``."""
    if getattr(opts, "scheduler", "fifo") != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    grace, factor = opts.asha_settings()
    return ASHAScheduler(time_attr="rung_iteration", metric="rung_reward", mode="max",
                         max_t=opts.iterations, grace_period=grace, reduction_factor=factor)


def check_search_data(opts: SearchOptions) -> dict[str, int]:
    """:func:`autoloss_ray.data.check_data` for the splits a search's trials read (the
    training split; ``eval_split`` when ``extra_config`` gives one). URIs are not checked."""
    from autoloss_ray.data import check_data

    if opts.data_root and is_uri(opts.data_root):
        return {}
    extra = opts.extra_config
    return check_data(opts.dataset, root=opts.data_root,
                      splits=[extra.get("split", "train"), extra.get("eval_split")],
                      dataset_options=opts.trial_config().get("dataset_options"))


def _plugin_env(opts: SearchOptions) -> dict[str, Any] | None:
    """The runtime environment shipping the working folder when ``--model``/``--dataset``
    name a module of it (None for built-in names)."""
    from autoloss_app.plugins import plugin_runtime_env

    return plugin_runtime_env([opts.model, opts.dataset], exclude=[
        opts.store, opts.tune_dir, opts.data_root, opts.report_dir, opts.export])


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before every trial was in the store (Ctrl-C); ``--resume`` goes on."""


class SearchOutcome(dict):
    """Summary of a finished search: counts, the answer (``best_theta`` by the ``answer``
    rule, ``answer_origin``), the best step by mean reward, the best trial's reward, paths
    written."""


def run_search(opts: SearchOptions) -> SearchOutcome:
    """Run (or resume) the search described by ``opts``; returns a :class:`SearchOutcome`.

    Resume (``opts.resume``) rebuilds the searcher from the Parquet store, not from Tune's
    experiment checkpoint: the searcher re-draws every step with the same seed, checks each
    stored trial against its draw, tells the stored rewards, and Tune then runs only the
    samples that have no row. A trial that was running when the search was killed runs again
    from its start; a finished one never does.
    """
    opts = opts.resolved()
    check_searcher_installed(opts.searcher)
    check_search_data(opts)  # before Ray starts or anything is written
    store = ExperimentStore(opts.store)
    manifest = store.read_search(opts.experiment)
    previous, results = previous_results(store, opts.experiment)
    check_search_start(opts, manifest, previous)  # before Ray starts or anything is written
    searcher, told = replayed_searcher(opts, store, results)
    with store.search_lock(opts.experiment):
        if not opts.resume and len(previous_results(store, opts.experiment)[0]):
            raise OptionsError(f"experiment {opts.experiment!r} got trials from another "
                               "search meanwhile; pass --resume or choose another --experiment")
        return _run_locked(opts, store, searcher, told, previous)


def _run_locked(opts: SearchOptions, store: ExperimentStore, searcher, told: int,
                previous) -> SearchOutcome:
    store.check_writable()  # before anything trains: a refused row is a lost trial
    # (re)write the manifest: a resume may have extended T or moved resources
    store.write_search(opts.experiment, search_manifest(opts))
    if not is_uri(opts.tune_dir):
        Path(opts.tune_dir).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    remaining = opts.steps * opts.samples - told
    trials = None  # the experiment's rows once the search is done (read below)
    if searcher.is_finished:
        if opts.verbose:
            print(f"[autoloss] experiment {opts.experiment}: all {opts.steps} steps are in the "
                  "store already; nothing to run", flush=True)
    else:
        url = init_ray(opts.address, verbose=opts.verbose, runtime_env=_plugin_env(opts))
        if opts.verbose:
            where = ray.get_runtime_context().gcs_address
            print(f"[autoloss] Ray at {where}" + (f", dashboard {url}" if url else ""),
                  flush=True)
            print(
                f"[autoloss] searching a {opts.metric} surrogate ({opts.parameterization}) "
                f"with {opts.searcher}: {opts.steps} steps x {opts.samples} trials, model "
                f"{opts.model} on {opts.dataset}, store {opts.store}, experiment "
                f"{opts.experiment}",
                flush=True,
            )
            if told:
                print(f"[autoloss] resuming: {told} trials from the store, {remaining} to run "
                      f"(from step {searcher.step + 1})", flush=True)
        # a resumed searcher ends the search itself (Searcher.FINISHED after T steps)
        tuner = build_tuner(opts, store, searcher=searcher,
                            num_samples=-1 if told else remaining, previous=previous)
        tuner.fit()
        # Tune catches Ctrl-C itself and returns early: a search that stopped short of
        # T x M trials in the store was interrupted, whatever fit() returned
        trials = store.trials(opts.experiment)  # the summary, export and report read it too
        done = len(previous_results(store, opts.experiment, trials=trials)[0])
        if done < opts.steps * opts.samples:
            raise SearchInterrupted(
                f"experiment {opts.experiment!r} stopped after {done} of "
                f"{opts.steps * opts.samples} trials")
    if opts.answer == "playoff":  # the answer's re-trainings (autoloss_app.playoff)
        from autoloss_app.playoff import run_playoff

        if run_playoff(opts, store):
            trials = None  # the playoff's rows are in the store now
    # the finished search, read once for the summary, the export and the report
    trials = store.trials(opts.experiment) if trials is None else trials
    policy = store.policy(opts.experiment)
    outcome = summarize(opts, store, trials=trials, policy=policy)
    outcome["seconds"] = time.monotonic() - start
    if opts.export:
        export_best(opts, store, opts.export, trials=trials, policy=policy)
        outcome["export"] = opts.export
    if opts.report_dir:
        from autoloss_ray.report import write_search_report

        outcome["report"] = write_search_report(store, opts.experiment, opts.report_dir,
                                                trials=trials, policy=policy)
    return outcome


def summarize(opts: SearchOptions, store: ExperimentStore, *, trials=None,
              policy=None) -> SearchOutcome:
    """The counts and the answer of a search (``trials`` / ``policy``: the experiment's rows
    when the caller has read them, else read here)."""
    trials = store.trials(opts.experiment) if trials is None else trials
    policy = store.policy(opts.experiment) if policy is None else policy
    everything = trials
    if len(trials):  # the playoff's re-trainings (kind "playoff") are not search trials
        trials = trials[trials["kind"] == "search"]
    out = SearchOutcome(
        experiment=opts.experiment,
        trials=int(len(trials)),
        failed=int((~ok_mask(trials)).sum()) if len(trials) else 0,
        steps=int(len(policy)),
    )
    if getattr(opts, "scheduler", "fifo") != "fifo":  # multi-fidelity: trials stopped at a rung
        out["stopped"] = (int(trials["stopped_early"].eq(True).sum())
                          if len(trials) and "stopped_early" in trials.columns else 0)
    if len(policy):
        best = policy.loc[policy["mean_reward"].astype(float).idxmax()]
        out["best_step"] = int(best["step"])
        out["best_mean_reward"] = float(best["mean_reward"])
    failed_step = first_failed_step(trials)
    if failed_step is not None:
        out["failed_step"], out["error"] = failed_step
    if len(trials):
        from autoloss_ray.report import best_theta

        try:
            theta = best_theta(everything, policy, answer=opts.answer)  # the --answer rule
        except ValueError as exc:  # a playoff without a successful re-training
            theta, out["answer_error"] = None, str(exc)
        if theta is not None:
            out["best_theta"] = [round(float(v), 6) for v in theta]
        out["answer"] = opts.answer
        if opts.answer == "playoff":
            from autoloss_app.playoff import playoff_summary

            out["playoff"] = playoff_summary(everything)
        from autoloss_ray.answer import answer_origin
        from autoloss_ray.report import unrecorded_answer

        # the answer's source (as the loss file's meta; options not resolved: the legacy
        # rule, as best_theta), and the best search trial that succeeded and ran to the end
        # (not a diverged one, not a rung's reward)
        out["answer_origin"] = answer_origin(everything, policy,
                                             opts.answer or unrecorded_answer(policy))
        best_trial = answer_origin(everything, policy, "best-trial")
        if best_trial:
            out["best_trial_reward"] = best_trial["reward"]
    return out


def first_failed_step(trials) -> tuple[int, str] | None:
    """``(step, error of its first sample)`` of the first step in which every search trial
    failed with an error (status ``failed``; a diverged trial, status ``nan``, is a result),
    or None. Such a search says nothing about the loss: the CLI exits non-zero with it."""
    if not len(trials):
        return None
    rows = trials[(trials["kind"] == "search") & trials["step"].notna()]
    for step, group in rows.groupby("step", sort=True):
        if failed_mask(group).all():
            first = group.sort_values(["sample", "finished_at"], kind="stable").iloc[0]
            return int(step), str(first["error"] or "no error text")
    return None


def export_best(opts: SearchOptions, store: ExperimentStore, path: str, *, trials=None,
                policy=None) -> str:
    """Write the best searched loss of the experiment as a JSON file for ``from_file``
    (``trials`` / ``policy``: its rows when the caller has read them)."""
    from autoloss_ray.export import export_experiment

    return export_experiment(store, opts.experiment, path, trials=trials, policy=policy)
