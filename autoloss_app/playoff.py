"""The playoff of a search (``autoloss search --answer playoff``): after the search's trials,
its top ``--playoff-k`` trials (plus PPO2's last mu) re-train with ``--playoff-seeds`` fresh
training seeds on Ray, as real proxy trials (:func:`trainables.playoff_task`), and the
candidate with the best mean reward is the search's answer (:mod:`autoloss_ray.answer`).

Each re-training is a store row of kind ``playoff`` in the search's own experiment (``step``:
the candidate, ``sample``: the seed index, ``loss``: ``playoff:<label>``); readers of search
rows select kind ``search``, so replay, tables and counts are unchanged. A resumed search
runs only the re-trainings that have no row yet.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from autoloss_app.options import OptionsError, SearchOptions
from autoloss_ray.answer import PLAYOFF_KIND, playoff_candidates, playoff_train_seed

__all__ = ["playoff_configs", "run_playoff"]

_INDEX = "__playoff"  # the grid key (TrialConfig lets "__" keys through)


def playoff_configs(opts: SearchOptions, trials, policy) -> list[dict[str, Any]]:
    """The trial configs of the playoff's re-trainings that have no store row yet, one per
    (candidate, seed), each with ``theta``, ``search_step`` (candidate), ``search_sample``
    (seed index), ``train_seed`` and ``loss_label``. Raises OptionsError when the store's
    playoff rows were run with other candidates (another ``--playoff-k``)."""
    cands = playoff_candidates(trials, policy, k=opts.playoff_k)
    done: dict[tuple[int, int], list[float]] = {}
    if len(trials) and "kind" in trials.columns:
        rows = trials[(trials["kind"] == PLAYOFF_KIND) & trials["step"].notna()]
        for r in rows.itertuples(index=False):
            done[(int(r.step), int(r.sample))] = r.theta
    for (c, _), theta in done.items():
        if c >= len(cands) or theta is None or not np.allclose(theta, cands[c][1], atol=1e-9):
            raise OptionsError(
                f"experiment {opts.experiment!r}: the playoff in the store re-trained other "
                f"candidates (candidate {c}); resume it with the original --playoff-k")
    base = {k: v for k, v in opts.trial_config().items() if k != "crn"}
    out = []
    for c, (label, theta) in enumerate(cands):
        for j in range(opts.playoff_seeds):
            if (c, j) in done:
                continue
            out.append({**base, "theta": [float(v) for v in theta], "search_step": c,
                        "search_sample": j, "train_seed": playoff_train_seed(opts.seed, j),
                        "loss_label": f"playoff:{label}"})
    return out


class _Pick:
    """Picklable ``tune.sample_from`` function: ``key`` of the playoff config the trial's
    grid index names."""

    def __init__(self, configs: list[dict[str, Any]], key: str) -> None:
        self.values = [cfg[key] for cfg in configs]

    def __call__(self, config: Any) -> Any:
        return self.values[config[_INDEX]]


def run_playoff(opts: SearchOptions, store) -> int:
    """Run the missing playoff re-trainings of ``opts.experiment`` (joining or starting Ray
    as the search does); returns how many ran. Needs the search's trials in the store.
    Raises :class:`autoloss_app.search_job.SearchInterrupted` when some are still missing
    afterwards (Ctrl-C: ``--resume`` runs them)."""
    from ray import tune

    from autoloss_app.ray_start import init_ray
    from autoloss_app.search_job import SearchInterrupted, _plugin_env
    from trainables import StoreCallback, playoff_task, with_gpu_resources

    configs = playoff_configs(opts, store.trials(opts.experiment),
                              store.policy(opts.experiment))
    if not configs:
        return 0
    init_ray(opts.address, verbose=opts.verbose, runtime_env=_plugin_env(opts))
    if opts.verbose:
        n_cands = len({c["search_step"] for c in configs})
        print(f"[autoloss] playoff: {len(configs)} re-trainings ({n_cands} candidates x up to "
              f"{opts.playoff_seeds} fresh seeds)", file=sys.stdout, flush=True)
    varying = ("theta", "search_step", "search_sample", "train_seed", "loss_label")
    space: dict[str, Any] = {k: v for k, v in configs[0].items() if k not in varying}
    space[_INDEX] = tune.grid_search(list(range(len(configs))))
    for key in varying:
        space[key] = tune.sample_from(_Pick(configs, key))
    tuner = tune.Tuner(
        with_gpu_resources(playoff_task, gpus_per_trial=opts.gpus_per_trial,
                           cpus_per_trial=opts.cpus_per_trial),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=opts.max_concurrent or opts.samples,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{opts.experiment}-playoff", storage_path=opts.tune_dir, verbose=0,
            callbacks=[StoreCallback(store.root, opts.experiment, opts.metric,
                                     kind=PLAYOFF_KIND)],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()
    left = playoff_configs(opts, store.trials(opts.experiment), store.policy(opts.experiment))
    if left:  # Tune returns early on Ctrl-C: a failed re-training has its row, a missing not
        raise SearchInterrupted(f"experiment {opts.experiment!r}: the playoff stopped with "
                                f"{len(left)} of {len(configs)} re-trainings to run")
    return len(configs)


def playoff_summary(trials) -> list[dict[str, Any]]:
    """The playoff's candidates as plain values for a search's summary, best first."""
    from autoloss_ray.answer import playoff_results

    return [{"label": r.label, "n": int(r.n), "failed": int(r.failed),
             "mean_reward": None if not math.isfinite(r.mean_reward) else
             round(float(r.mean_reward), 6)}
            for r in playoff_results(trials).itertuples()]
