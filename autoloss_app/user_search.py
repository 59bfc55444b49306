"""Search a loss for the user's own training code: :func:`search_loss` (``from autoloss_app
import search_loss``).

The user writes one function, ``train_fn(loss, config) -> {"miou": 0.61, ...}``: it gets the
sampled loss (a ``SurrogateLoss`` for the task's ``num_classes``, already on
``config["device"]``) and a read-only config (:class:`trainables.user_task.TrialContext`),
trains however it likes and returns the metrics. One call runs the whole search as
``autoloss search`` does (the same searchers, Parquet store, progress lines, resume, report
and export); only the trainable differs (:func:`trainables.user_task.user_trainable`)::

    result = search_loss(train_fn, num_classes=4, experiment="mine", steps=4, samples=8,
                         store="runs/store", export="runs/mine-loss.json")

Everything is checked before Ray starts or a file is written (one-sentence ``OptionsError``
/ ``TypeError``). The class count is the task's own: it is in every trial's config and the
search manifest, so ``autoloss export`` / ``report`` of the experiment need nothing from the
built-in tasks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoloss_app.common_options import DEFAULT_ANSWER, CommonSearchOptions
from autoloss_app.option_checks import is_uri
from autoloss_app.resume import check_same_task, previous_results, search_manifest
from autoloss_app.user_options import UserSearchOptions, task_name
from autoloss_ray.validation import OptionsError
from autoloss_ray.vocabulary import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX

__all__ = ["search_loss", "SearchLossResult", "UserSearchOptions", "TrialsFailedError",
           "task_name"]


# search_loss's defaults are those of every search of the application
_COMMON = CommonSearchOptions()


class TrialsFailedError(RuntimeError):
    """Every trial of a search step failed (the trials' rows and errors are in the store)."""


@dataclass(frozen=True, eq=False)
class SearchLossResult:
    """What :func:`search_loss` returns.

    ``best_theta``: the search's answer under its ``answer`` rule (default ``"best-trial"``:
    the best trial's theta, whatever the searcher); ``trials``: the experiment's store rows (a pandas
    DataFrame, one row per trial); ``export`` / ``report``: the paths written (or None);
    ``summary``: the counts ``autoloss search`` prints (trials, failed, steps, best step...).
    """

    experiment: str
    store: str
    num_classes: int
    best_theta: tuple[float, ...] | None
    best_reward: float | None
    export: str | None
    report: dict[str, str] | None
    trials: Any
    summary: dict[str, Any]

    def loss(self):
        """The searched loss as a ``SurrogateLoss`` for the task's class count."""
        from autoloss_ray.export import experiment_loss

        return experiment_loss(self.store, self.experiment, num_classes=self.num_classes)[0]


def _as_search_options(opts: UserSearchOptions) -> Any:
    """``opts`` as the shared search pieces (``build_searcher``, ``build_tuner``,
    ``summarize``) read a ``SearchOptions``: every field this search does not set has
    ``SearchOptions``' default (PPO2's switches, ...); ``trial_config`` is this task's."""
    from types import SimpleNamespace

    from autoloss_app.options import SearchOptions

    values: dict[str, Any] = {}
    for f in dataclasses.fields(SearchOptions):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    values.update({f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)})
    return SimpleNamespace(**values, trial_config=opts.trial_config)


def _check_train_fn(train_fn: Any) -> None:
    import inspect

    if not callable(train_fn):
        raise OptionsError(f"train_fn must be a function train_fn(loss, config) -> dict of "
                           f"metrics, got {type(train_fn).__name__}")
    try:
        signature = inspect.signature(train_fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(None, None)
        except TypeError:
            raise OptionsError(f"train_fn must take two positional arguments (loss, config), "
                               f"but {task_name(train_fn)} has the signature "
                               f"{signature}") from None
    from ray import cloudpickle

    try:
        cloudpickle.dumps(train_fn)
    except Exception as exc:  # noqa: BLE001 - any pickling error means the same thing
        raise OptionsError(f"train_fn cannot be sent to the Ray workers (it does not pickle: "
                           f"{type(exc).__name__}: {exc}); define it at the top level of a "
                           "module or script") from None


def _module_to_ship(train_fn: Callable[..., Any]):
    """The module of ``train_fn`` when it is the user's own file (not installed, not the
    standard library, not ``__main__``, which cloudpickle ships by value anyway), else None.

    Ray's workers do not see the driver's ``sys.path`` additions (a test folder, a notebook's
    folder), so such a module is pickled by value with the trainable: its functions and
    constants travel to every worker, on one machine or a cluster. What it imports from other
    files must be importable there (installed, or shipped with Ray's runtime environment).
    """
    import sysconfig

    module = sys.modules.get(getattr(train_fn, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if module is None or module.__name__ == "__main__" or not file:
        return None
    where = Path(file).resolve()
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        root = sysconfig.get_paths().get(key)
        if root and where.is_relative_to(Path(root).resolve()):
            return None
    return module


def search_loss(
    train_fn: Callable[..., Mapping[str, Any]],
    *,
    num_classes: int,
    experiment: str,
    steps: int,
    samples: int,
    metric: str = _COMMON.metric,
    store: str | os.PathLike[str] = _COMMON.store,
    searcher: str = _COMMON.searcher,
    parameterization: str = _COMMON.parameterization,
    seed: int = _COMMON.seed,
    config: Mapping[str, Any] | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    gpus_per_trial: float = _COMMON.gpus_per_trial,
    cpus_per_trial: float = _COMMON.cpus_per_trial,
    max_concurrent: int | None = None,
    resume: bool = False,
    export: str | os.PathLike[str] | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    tune_dir: str | os.PathLike[str] | None = None,
    address: str | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    sigma: float = _COMMON.sigma,
    clip_eps: float = _COMMON.clip_eps,
    lr: float = _COMMON.lr,
    update_steps: int = _COMMON.update_steps,
    baseline: str = _COMMON.baseline,
    init_preset: str | None = None,
    failure_reward: float = _COMMON.failure_reward,
    answer: str = DEFAULT_ANSWER,
    verbose: int = _COMMON.verbose,
) -> SearchLossResult:
    """Search a ``metric`` surrogate loss for ``train_fn`` on Ray Tune; see the module
    docstring.

    Args:
        train_fn: ``train_fn(loss, config) -> {"miou": 0.61, ...}``, called once per trial
            on a Ray worker (:mod:`trainables.user_task` says what ``config`` holds; seeded
            with ``seed``). It may call :func:`autoloss_app.report` for intermediate values.
            Raising, or returning no dict with the metric, fails that trial only.
        num_classes: the task's class count (C >= 2): the loss is built for it and the store
            and the exported loss record it.
        experiment, store: the experiment's name and the Parquet store it lands in.
        steps, samples: T search steps of M trials each (M >= 2).
        metric: the metric spec searched and rewarded (``"miou"``, ``"miou+biou"``...);
            ``train_fn`` must return each of its terms, as fractions in [0, 1].
        searcher: ``"ppo"`` (PPO2, the paper's), ``"random"``, ``"tpe"``, ``"cmaes"``.
        config: constants passed through to ``train_fn``'s config (JSON values).
        ignore_index, boundary_tolerance: of the loss (255: ignored label; BIoU/BF1 band).
        gpus_per_trial, cpus_per_trial, max_concurrent, address: where and how wide it runs
            (as ``autoloss search``; an embedded Ray without a GPU runs trials on CPU).
        runtime_env: Ray's runtime environment for the Ray that ``search_loss`` starts or
            joins (e.g. ``{"working_dir": "."}`` to ship the modules ``train_fn`` imports
            from your folder to a cluster); not used when Ray is already initialised.
        resume: continue the experiment from the store (only the runtime arguments and a
            larger ``steps`` may change); no finished trial runs again.
        export, report_dir: write the searched loss (JSON for ``SurrogateLoss.from_file``)
            and a report (Markdown + PNG) at the end.
        sigma, clip_eps, lr, update_steps, baseline, init_preset, failure_reward: the
            searcher's (as the ``autoloss search`` options of the same names).
        answer: the search's answer (``best_theta``, the export, the report):
            ``"best-trial"`` (the highest-reward trial) or ``"policy-mean"`` (PPO2 only: the
            policy mean of its best step, the paper's).
        verbose: 0 prints nothing; 1 a line per finished trial.

    Returns:
        a :class:`SearchLossResult`. Raises :class:`OptionsError` (a ValueError) or
        TypeError before anything runs on bad arguments, :class:`TrialsFailedError` when
        every trial of a step failed, ``SearchInterrupted`` on Ctrl-C (resume continues).
    """
    _check_train_fn(train_fn)
    if runtime_env is not None and not isinstance(runtime_env, Mapping):
        raise OptionsError(f"runtime_env must be a dict (Ray's runtime environment), got "
                           f"{type(runtime_env).__name__}")
    opts = UserSearchOptions(
        task=task_name(train_fn), num_classes=num_classes, metric=metric,
        parameterization=parameterization, searcher=searcher, ignore_index=ignore_index,
        boundary_tolerance=boundary_tolerance,
        config=dict(config) if isinstance(config, Mapping) else (config or {}),
        steps=steps, samples=samples, sigma=sigma, clip_eps=clip_eps, lr=lr,
        update_steps=update_steps, baseline=baseline, init_preset=init_preset,
        failure_reward=failure_reward, answer=answer, gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial, max_concurrent=max_concurrent, store=os.fspath(store),
        tune_dir=None if tune_dir is None else os.fspath(tune_dir), experiment=experiment,
        seed=seed, address=address, resume=bool(resume),
        export=None if export is None else os.fspath(export),
        report_dir=None if report_dir is None else os.fspath(report_dir), verbose=verbose,
    ).resolved()
    from autoloss_app.search_job import check_searcher_installed, replayed_searcher
    from autoloss_ray.store import ExperimentStore

    check_searcher_installed(opts.searcher)
    store_ = ExperimentStore(opts.store)
    manifest = store_.read_search(opts.experiment)
    previous, results = previous_results(store_, opts.experiment)
    if not opts.resume and (len(previous) or manifest is not None):
        raise OptionsError(f"experiment {opts.experiment!r} already has a search in "
                           f"{opts.store}; pass resume=True to continue it or choose another "
                           "experiment")
    if opts.resume and manifest is None and not len(previous):
        raise OptionsError(f"resume=True: experiment {opts.experiment!r} has no search in the "
                           f"store {opts.store} to resume; run without resume to start it")
    check_same_task(opts, manifest, previous)
    searcher_, told = replayed_searcher(_as_search_options(opts), store_, results)
    with store_.search_lock(opts.experiment):
        if not opts.resume and len(previous_results(store_, opts.experiment)[0]):
            raise OptionsError(f"experiment {opts.experiment!r} got trials from another "
                               "search meanwhile; pass resume=True or choose another one")
        return _run_locked(train_fn, opts, store_, searcher_, told, previous,
                           runtime_env=None if runtime_env is None else dict(runtime_env))


def _run_locked(train_fn, opts: UserSearchOptions, store, searcher, told: int,
                previous, *, runtime_env: dict[str, Any] | None = None) -> SearchLossResult:
    import ray
    from ray import cloudpickle

    from autoloss_app.ray_start import init_ray
    from autoloss_app.search_job import SearchInterrupted, build_tuner, summarize
    from trainables import with_gpu_resources
    from trainables.user_task import user_trainable

    store.check_writable()  # before anything trains: a refused row is a lost trial
    store.write_search(opts.experiment, search_manifest(opts))
    if not is_uri(opts.tune_dir):
        Path(opts.tune_dir).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    total = opts.steps * opts.samples
    trials = None  # the experiment's rows once the search is done (read below)
    say = (lambda text: print(f"[autoloss] {text}", flush=True)) if opts.verbose else (
        lambda text: None)
    if searcher.is_finished:
        say(f"experiment {opts.experiment}: all {opts.steps} steps are in the store already; "
            "nothing to run")
    else:
        url = init_ray(opts.address, verbose=opts.verbose, runtime_env=runtime_env)
        say(f"Ray at {ray.get_runtime_context().gcs_address}"
            + (f", dashboard {url}" if url else ""))
        say(f"searching a {opts.metric} surrogate ({opts.parameterization}) with "
            f"{opts.searcher} for {opts.task} ({opts.num_classes} classes): {opts.steps} steps "
            f"x {opts.samples} trials, store {opts.store}, experiment {opts.experiment}")
        if told:
            say(f"resuming: {told} trials from the store, {total - told} to run (from step "
                f"{searcher.step + 1})")
        trainable = with_gpu_resources(user_trainable(train_fn),
                                       gpus_per_trial=opts.gpus_per_trial,
                                       cpus_per_trial=opts.cpus_per_trial)
        ship = _module_to_ship(train_fn)
        shipped = (ship is not None
                   and ship.__name__ not in cloudpickle.list_registry_pickle_by_value())
        if shipped:
            cloudpickle.register_pickle_by_value(ship)
        try:
            tuner = build_tuner(_as_search_options(opts), store, searcher=searcher,
                                num_samples=-1 if told else total - told, previous=previous,
                                trainable=trainable)
            tuner.fit()
        finally:
            if shipped:
                cloudpickle.unregister_pickle_by_value(ship)
        trials = store.trials(opts.experiment)  # the summary, export and report read it too
        done = len(previous_results(store, opts.experiment, trials=trials)[0])
        if done < total:
            raise SearchInterrupted(f"experiment {opts.experiment!r} stopped after {done} of "
                                    f"{total} trials")
    # the finished search, read once for the summary, the export, the report and the result
    trials = store.trials(opts.experiment) if trials is None else trials
    policy = store.policy(opts.experiment)
    summary = dict(summarize(_as_search_options(opts), store, trials=trials, policy=policy))
    summary["seconds"] = time.monotonic() - start
    if summary.get("failed_step") is not None:
        raise TrialsFailedError(
            f"every trial of step {summary['failed_step']} of experiment {opts.experiment!r} "
            f"failed; the first one's error: {summary.get('error')}")
    exported = report = None
    if opts.export:
        from autoloss_ray.export import export_experiment

        exported = export_experiment(store, opts.experiment, opts.export,
                                     num_classes=opts.num_classes, trials=trials, policy=policy)
    if opts.report_dir:
        from autoloss_ray.report import write_search_report

        report = write_search_report(store, opts.experiment, opts.report_dir, trials=trials,
                                     policy=policy)
    if opts.verbose:
        print("[autoloss] done: " + json.dumps(summary, default=str), file=sys.stdout,
              flush=True)
    theta = summary.get("best_theta")
    return SearchLossResult(
        experiment=opts.experiment, store=opts.store, num_classes=opts.num_classes,
        best_theta=None if theta is None else tuple(float(v) for v in theta),
        best_reward=summary.get("best_trial_reward"), export=exported, report=report,
        trials=trials, summary=summary,
    )
