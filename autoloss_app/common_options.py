"""The options every search of the application shares (no ray import).

:class:`CommonSearchOptions` holds them with their defaults: ``autoloss search`` /
``search.py`` (:class:`autoloss_app.options.SearchOptions`) and ``search_loss``
(:class:`autoloss_app.user_options.UserSearchOptions`) add their own. Their checks are
written once, :meth:`CommonSearchOptions.validate_common`, and name each option as its user
gave it: the command line's ``--flag-name`` or the Python API's ``keyword_name``
(:data:`~autoloss_app.option_checks.FLAGS`, :data:`~autoloss_app.option_checks.KEYWORDS`).

Each option is defined once: its default, and in the field's metadata (:func:`option`) what
its ``autoloss search`` flag says and accepts (help, choices, nargs); :mod:`autoloss_app.cli`
generates the flags from the fields. PPO2's settings take theirs from
:class:`~autoloss_ray.search.config.PPO2Config` (:func:`ppo2_config` builds one back).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoloss_app.option_checks import (
    DEFAULT_STORE,
    Spelling,
    check_choice,
    check_finite,
    check_max_concurrent,
    check_output_dir,
    check_output_file,
    check_seed,
    is_uri,
)
from autoloss_ray.search.config import PPO2Config
from autoloss_ray.validation import SEARCH_NAME_MAX, SEARCH_NAME_RE, OptionsError, check_resources
from autoloss_ray.vocabulary import DEFAULT_PARAMETERIZATION, METRICS

__all__ = ["CommonSearchOptions", "SEARCHERS", "DEFAULT_FAILURE_REWARD", "DEFAULT_ANSWER",
           "PPO2_DEFAULTS", "ppo2_config", "option", "ppo2_option"]

# the reward a failed or diverged trial gets in a search of the application (autoloss search,
# search_loss; the searchers' own default, None, is the worst valid value seen so far)
DEFAULT_FAILURE_REWARD = 0.0
# PPO2's settings' defaults (the options below that are PPO2Config fields take theirs from it)
PPO2_DEFAULTS = PPO2Config()
_PPO2_FIELDS = {f.name: f for f in dataclasses.fields(PPO2Config)}
# the search's answer by default (autoloss_ray.answer): the best trial
DEFAULT_ANSWER = "best-trial"

# ppo: PPO2 (the paper); random: uniform random search; tpe / cmaes: optuna's samplers through
# Ray Tune's OptunaSearch (the optional extra autoloss-ray[optuna]).
SEARCHERS = ("ppo", "random", "tpe", "cmaes")


def option(default: Any, help: str | None = None, **argparse_keywords: Any) -> Any:
    """A field of the options with its command-line flag's description as the field's metadata
    (what :mod:`autoloss_app.cli` generates the flag from): ``help`` (``%(default)s`` in it
    stands for the default, as in argparse) and the argparse keywords the default's type does
    not give (``choices``, ``nargs``, ``metavar``, ``action``)."""
    return field(default=default, metadata={"help": help, **argparse_keywords})


def ppo2_option(name: str) -> Any:
    """The option of PPO2's setting ``name``: the :class:`PPO2Config` field's default and
    metadata (help, choices)."""
    return field(default=getattr(PPO2_DEFAULTS, name), metadata=_PPO2_FIELDS[name].metadata)


@dataclass(frozen=True, kw_only=True)
class CommonSearchOptions:
    """The options of every search of the application, with their defaults: ``autoloss
    search`` (:class:`~autoloss_app.options.SearchOptions`) and ``search_loss``
    (:class:`autoloss_app.user_options.UserSearchOptions`) add their own."""

    metric: str = option("miou", f"target metric: {', '.join(METRICS)}, or a sum such as "
                         "miou+biou (default: %(default)s)")
    parameterization: str = option(
        DEFAULT_PARAMETERIZATION, "curve family h(x) (default: %(default)s, 2 quadratic "
        "segments)", choices=("bezier", "bezier1", "linear", "identity"))
    searcher: str = option(
        "ppo", "ppo: PPO2 (the paper); random: uniform random search; tpe, cmaes: optuna's "
        "TPE / CMA-ES through Ray Tune's OptunaSearch (pip install 'autoloss-ray[optuna]'); "
        "every searcher runs --steps x --samples trials (default: %(default)s)",
        choices=SEARCHERS)
    # PPO2's settings (autoloss_ray.search.PPO2Config; ppo2_config(options) builds it);
    # sigma is also random search's and CMA-ES's scale
    sigma: float = ppo2_option("sigma")
    clip_eps: float = ppo2_option("clip_eps")
    lr: float = ppo2_option("lr")
    update_steps: int = ppo2_option("update_steps")
    baseline: str = ppo2_option("baseline")
    init_preset: str | None = option(None, "start mu at a paper preset (e.g. miou)")
    failure_reward: float = option(DEFAULT_FAILURE_REWARD, "reward given to a failed or "
                                   "diverged trial (default %(default)g)")
    gpus_per_trial: float = option(
        1.0, "GPUs per trial; fractions pack trials on one GPU; an embedded local Ray without "
        "GPU runs them on CPU; on a cluster they wait for GPU nodes (default %(default)g)")
    cpus_per_trial: float = option(1.0)
    max_concurrent: int | None = option(None, "trials running at once (default: M)")
    store: str = option(DEFAULT_STORE, "Parquet store: path or URI")
    tune_dir: str | None = option(
        None, "Ray Tune's working directory for trial logs (default: <store>/../tune); resume "
        "reads the store, not this")
    experiment: str = option("demo", "experiment name in the store")
    seed: int = option(0)
    address: str | None = option(
        None, "Ray cluster address ('auto' = the running one); default: the cluster of `ray "
        "job submit`, else an embedded local Ray")
    resume: bool = option(
        False, "continue an interrupted search of the same --experiment from the store; "
        "options not given are the original search's, options given must match them "
        "(resources, paths and a larger --steps may change)", action="store_true")
    export: str | None = option(None, "write the best loss to this JSON file")
    report_dir: str | None = option(None, "write a report (Markdown + PNG) here")
    verbose: int = 1  # the CLI's -q/--quiet: 0

    def validate_common(self, spelling: Spelling) -> None:
        """The checks of the shared options that need no compute, each an
        :class:`OptionsError` naming the option as ``spelling`` does (``FLAGS``: ``autoloss
        search``; ``KEYWORDS``: ``search_loss``): every float option of ``self`` (the
        subclass's too) finite, the metric spec and its search space, the searcher, sigma,
        resources, concurrency, seed, experiment name, store and output paths, init preset.
        PPO2's other settings are checked where :func:`ppo2_config` builds them (before Ray);
        the options' own checks are the subclass's ``validate``."""
        from autoloss_ray.losses import search_space
        from autoloss_ray.vocabulary import parse_metric

        check_finite(spelling, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        try:
            parse_metric(self.metric)  # names the allowed metrics
            search_space(self.metric, self.parameterization)
        except (TypeError, ValueError) as exc:
            raise OptionsError(str(exc)) from None
        check_choice(self.searcher, SEARCHERS, spelling("searcher"))
        if not self.sigma > 0:
            raise OptionsError(f"{spelling('sigma')} must be > 0, got {self.sigma}")
        check_resources(self.gpus_per_trial, self.cpus_per_trial, flags=spelling.flags)
        check_max_concurrent(self.max_concurrent, spelling("max_concurrent"))
        check_seed(self.seed, spelling("seed"))
        if not isinstance(self.experiment, str) or not SEARCH_NAME_RE.match(self.experiment):
            raise OptionsError(
                f"{spelling('experiment')} must be 1-{SEARCH_NAME_MAX} letters, digits, '_', "
                f"'.', '-' (not starting with '.', '_' or '-'), got {self.experiment!r}")
        if not is_uri(self.store) and Path(self.store).exists() and not Path(
                self.store).is_dir():
            raise OptionsError(f"{spelling('store')} {self.store!r} is an existing file; give "
                               "a directory path")
        check_output_file(self.export, spelling("export"))
        check_output_dir(self.report_dir, spelling("report_dir"))
        check_output_dir(self.tune_dir, spelling("tune_dir"))
        if self.init_preset is not None:
            from autoloss_ray.losses.presets import PRESETS

            if self.init_preset not in PRESETS:
                raise OptionsError(f"{spelling('init_preset')} must be one of "
                                   f"{sorted(PRESETS)}, got {self.init_preset!r}")


def ppo2_config(opts: Any) -> PPO2Config:
    """PPO2's settings of a search: the :class:`PPO2Config` fields ``opts`` has (a
    :class:`~autoloss_app.options.SearchOptions`, or what a user task's search reads as one),
    with the official setting of baseline ``"mu"``: sample 0 of every step is mu itself
    (``include_mean``)."""
    values = {f.name: getattr(opts, f.name) for f in dataclasses.fields(PPO2Config)
              if hasattr(opts, f.name)}
    values["include_mean"] = opts.baseline == "mu"
    return PPO2Config(**values)
