"""Validated, keyword-only options of a search run (no ray import).

The CLI, ``search.py`` and programmatic callers build a :class:`SearchOptions`; ``validate``
checks everything that can be checked before Ray starts or a file is written, so that bad
input fails fast with one sentence and leaves nothing behind. The options it shares with a
search of the user's own task (:class:`autoloss_app.user_options.UserSearchOptions`), and
their checks, are :class:`~autoloss_app.common_options.CommonSearchOptions`'s; the checks the
commands share are in :mod:`autoloss_app.option_checks` (both re-exported here).

Each option is defined once, here or in :mod:`autoloss_app.common_options`: its default, and
in the field's metadata (:func:`option`) what its ``autoloss search`` / ``search.py`` flag
says and accepts (help, choices, nargs); :mod:`autoloss_app.cli` generates the flags from the
fields; ``recipe`` fills the proxy task's options left ``None`` (:data:`RECIPES`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoloss_app.common_options import (
    DEFAULT_ANSWER,
    DEFAULT_FAILURE_REWARD,
    PPO2_DEFAULTS,
    SEARCHERS,
    CommonSearchOptions,
    option,
    ppo2_config,
    ppo2_option,
)
from autoloss_app.evaluate import DATASET_HELP, IGNORE_HELP
from autoloss_app.option_checks import (
    FLAGS,
    check_choice,
    check_data_root,
    check_finite,
    check_folder_options,
    check_max_concurrent,
    check_output_dir,
    check_output_file,
    default_tune_dir,
    folder_num_classes,
    is_uri,
)
from autoloss_ray.answer import ANSWER_RULES
from autoloss_ray.search.config import (
    ADVANTAGES,
    DEFAULT_SAMPLES_PER_STEP,
    DEFAULT_STEPS,
    STARTUPS,
)
from autoloss_ray.validation import OptionsError, check_resources
from autoloss_ray.vocabulary import EVAL_PROTOCOLS

__all__ = ["LEGACY_MANIFEST", "RECIPES", "SEARCHERS", "CommonSearchOptions", "SearchOptions",
           "OptionsError", "is_uri",
           "default_tune_dir", "DEFAULT_FAILURE_REWARD", "DEFAULT_ANSWER", "PPO2_DEFAULTS",
           "ppo2_config",
           "check_finite", "check_resources", "check_max_concurrent",
           "check_output_file", "check_output_dir", "check_folder_options", "check_data_root",
           "folder_num_classes", "SCHEDULERS", "asha_rungs", "option"]

# Proxy-task recipes. "demo" finishes on 2 CPU cores in a few minutes (the main job of
# docs/getting-started.md); "paper" is the paper's proxy task (docs/paper.md).
RECIPES: dict[str, dict[str, Any]] = {
    "demo": {
        "model": "tiny",
        "image_size": 64,
        "iterations": 60,
        "batch_size": 8,
        "eval_protocol": "native",
        "steps": 4,
        "samples": 8,
        "train_size": 192,
        "holdout_fraction": 0.25,
    },
    "paper": {
        "model": "deeplabv3_resnet50",
        "image_size": 128,
        "iterations": 1000,
        "batch_size": 32,
        "eval_protocol": "native",
        "steps": DEFAULT_STEPS,
        "samples": DEFAULT_SAMPLES_PER_STEP,
        "train_size": 0,
        "holdout_fraction": 0.1,
    },
}

# Options a search manifest of an older version lacks, with the value that search ran with
# (before eval_protocol existed, the hold-out reward was scored at the training size).
LEGACY_MANIFEST: dict[str, Any] = {"eval_protocol": "train_size",
                                   # no --answer yet: the searcher's rule then (resolved())
                                   "answer": None}


SCHEDULERS = ("fifo", "asha")
# ASHA's default reduction factor here (Ray's own is 4); see docs/search.md, Multi-fidelity
DEFAULT_REDUCTION_FACTOR = 2.0


def asha_rungs(iterations: int, grace_period: int, reduction_factor: float) -> list[int]:
    """ASHA's milestones below ``iterations`` (Ray's ``ASHAScheduler`` with ``max_t`` =
    ``iterations``, one bracket): ``ceil(grace_period * reduction_factor**k)`` for k = 0, 1,
    ... while below ``iterations`` (the final result ends every trial anyway). A ValueError
    for a grace period outside [1, iterations) or a reduction factor not above 1."""
    if isinstance(grace_period, bool) or not isinstance(grace_period, int) or not (
            1 <= grace_period < iterations):
        raise ValueError(f"--grace-period must be an int in [1, --iterations={iterations}), "
                         f"got {grace_period!r}")
    if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, (int, float)) or (
            not math.isfinite(reduction_factor) or reduction_factor <= 1):
        raise ValueError(f"--reduction-factor must be a number > 1, got {reduction_factor!r}")
    rungs, k = [], 0
    while (r := math.ceil(grace_period * reduction_factor**k - 1e-9)) < iterations:
        if not rungs or r > rungs[-1]:
            rungs.append(r)
        k += 1
    return rungs


@dataclass(frozen=True, kw_only=True)
class SearchOptions(CommonSearchOptions):
    """Everything a search needs. ``None`` means "take it from the recipe"."""

    # common random numbers: every search trial trains with --seed (same init, data order);
    # False: trial (step, sample) trains with a seed of its own (same data and hold-out)
    crn: bool = option(
        True, "common random numbers: every trial trains with --seed (same weight init and "
        "data order), so rewards differ by the loss alone; --no-crn gives each trial (step, "
        "sample) a training seed of its own, on the same data (default: --crn)")
    recipe: str = option(
        "demo", "defaults for the proxy task: 'demo' (tiny net, 2 CPU cores, minutes) or "
        "'paper' (DeepLabV3-R50, 128px, 1000 it, M=32, T=12); flags below override it",
        choices=tuple(sorted(RECIPES)))
    dataset: str = option("synthetic", DATASET_HELP)
    data_root: str | None = option(None, "dataset directory (not for synthetic)")
    # folder dataset: filled from its classes.txt
    num_classes: int | None = option(
        None, "the class count, for a --dataset MODULE:FUNCTION whose dataset has no "
        "num_classes attribute")
    # folder dataset: the mask value that is ignored (None: IGNORE_INDEX)
    ignore_index: int | None = option(None, IGNORE_HELP)
    model: str | None = option(
        None, "tiny, lraspp_mobilenet_v3_large, deeplabv3_resnet50, deeplabv3_resnet101, "
        "fcn_resnet50, or your own network as MODULE:FUNCTION (e.g. mymodels:build, "
        "mymodels.py in the working folder: called as FUNCTION(num_classes=C), returns an "
        "nn.Module giving logits [N, C, h, w] or a dict with 'out'; the folder is shipped to "
        "every Ray worker)")
    backbone_weights: str | None = option(
        None, "local .pth file with backbone weights (never downloaded)")
    iterations: int | None = option(None, "SGD iterations per trial")
    batch_size: int | None = option(None)
    # training crops: S or (H, W) (the CLI's tokens: autoloss_ray.data.transforms.parse_image_size)
    image_size: int | tuple[int, int] | None = option(
        None, "training crop size: S (square), HxW or H W", nargs="+", metavar="SIZE")
    # hold-out reward: one of EVAL_PROTOCOLS
    eval_protocol: str | None = option(
        None, "how the hold-out reward is scored: 'native' (labels at their own resolution, "
        "logits upsampled to them) or 'train_size' (image and label resized to --image-size; "
        "cheaper); default: the recipe's", choices=EVAL_PROTOCOLS)
    train_size: int | None = option(
        None, "images the proxy task draws from: the synthetic dataset's length, or a seeded "
        "subset of a real dataset's training split (0 = all; the demo recipe: "
        f"{RECIPES['demo']['train_size']})")
    holdout_fraction: float | None = option(
        None, "share of the training split held out for the reward")
    steps: int | None = option(None, "T, PPO steps")
    samples: int | None = option(None, "M, trials per step (>= 2)")
    # PPO2 options beyond the paper (issue 29.3)
    startup: str = ppo2_option("startup")
    advantages: str = ppo2_option("advantages")
    mirrored: bool = ppo2_option("mirrored")
    # multi-fidelity (issue 29.4): "asha" = Ray's ASHAScheduler stops poor trials at rungs
    scheduler: str = option(
        "fifo", "'fifo' (every trial trains to the end; default) or 'asha' (trials report the "
        "hold-out reward, scored at the training size, at ASHA's rungs and Ray's "
        "ASHAScheduler stops the poor ones; a stopped trial ranks below every finished trial "
        "of its step)", choices=SCHEDULERS)
    # None: iterations // 4
    grace_period: int | None = option(
        None, "--scheduler asha: the first rung, in iterations (default: a quarter of "
        "--iterations)")
    # None: DEFAULT_REDUCTION_FACTOR
    reduction_factor: float | None = option(
        None, "--scheduler asha: rungs at grace x factor^k iterations, and the top 1/factor of "
        f"a rung go on (default {DEFAULT_REDUCTION_FACTOR:g})")
    # the search's answer (autoloss_ray.answer): best-trial | playoff | policy-mean; None:
    # the rule of a search from before the option (PPO2: policy-mean, others: best-trial)
    answer: str | None = option(
        DEFAULT_ANSWER, "the search's answer (what --export, --report-dir, `autoloss export` "
        "and `autoloss report` use; recorded in the manifest): 'best-trial' (the "
        "highest-reward trial; default), 'playoff' (the --playoff-k best trials, plus PPO2's "
        "last mu, re-trained with --playoff-seeds fresh training seeds after the search; the "
        "best mean wins) or 'policy-mean' (PPO2 only: the mean mu of its best step, the "
        "paper's)", choices=ANSWER_RULES)
    playoff_k: int = option(
        3, "--answer playoff: how many of the best trials re-train (default %(default)s)")
    playoff_seeds: int = option(
        2, "--answer playoff: fresh training seeds per candidate (default %(default)s)")
    extra_config: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> SearchOptions:
        """Fill the ``None`` fields from the recipe and validate; returns a new object."""
        if self.recipe not in RECIPES:
            raise OptionsError(
                f"unknown recipe {self.recipe!r}; expected one of {sorted(RECIPES)}"
            )
        values = {
            k: (RECIPES[self.recipe][k] if getattr(self, k) is None else getattr(self, k))
            for k in RECIPES[self.recipe]
        }
        values["tune_dir"] = default_tune_dir(self.store, self.tune_dir)
        try:  # one spelling in the manifest: "MIOU + biou" -> "miou+biou" (resume compares it)
            from autoloss_ray.vocabulary import parse_metric

            values["metric"] = "+".join(parse_metric(self.metric))
        except (TypeError, ValueError):
            pass  # validate() says what is wrong with it
        if self.answer is None:
            from autoloss_ray.answer import legacy_answer

            values["answer"] = legacy_answer(self.searcher)
        if (self.dataset == "folder" and self.num_classes is None and self.data_root
                and not is_uri(self.data_root) and Path(self.data_root).is_dir()):
            values["num_classes"] = folder_num_classes(self.data_root)
        out = dataclasses.replace(self, **values)
        out.validate()
        return out

    def validate(self) -> None:
        """Every check that needs no compute: the shared options'
        (:meth:`~autoloss_app.common_options.CommonSearchOptions.validate_common`, messages
        naming the flags), this command's option ranges, and the very checks a trial makes on
        its config (:func:`autoloss_ray.train.check_trial_config`), so a search whose trials
        would all fail is refused before Ray starts."""
        self.validate_common(FLAGS)
        if self.steps is not None and self.steps < 1:
            raise OptionsError(f"--steps must be >= 1, got {self.steps}")
        if self.samples is not None and self.samples < 2:
            raise OptionsError(
                f"--samples (M) must be >= 2 so that PPO has an advantage to follow, "
                f"got {self.samples}"
            )
        self._validate_answer_and_ppo_options()
        for name in ("iterations", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OptionsError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.image_size is not None:
            from autoloss_ray.data.transforms import parse_image_size

            try:
                parse_image_size(self.image_size)
            except ValueError as exc:
                raise OptionsError(f"--image-size: {exc}") from None
        if self.eval_protocol is not None and self.eval_protocol not in EVAL_PROTOCOLS:
            raise OptionsError(
                f"--eval-protocol must be {' or '.join(repr(p) for p in EVAL_PROTOCOLS)}, "
                f"got {self.eval_protocol!r}"
            )
        self._validate_scheduler()
        from autoloss_ray.train import check_trial_config

        try:
            # "crn" is the proxy trainable's switch (it picks the trial's train_seed), not a
            # key of the trial itself
            check_trial_config({k: v for k, v in self.trial_config().items() if k != "crn"})
        except (ValueError, TypeError) as exc:
            raise OptionsError(str(exc)) from None
        if ":" in self.dataset:  # a user's MODULE:FUNCTION: --data-root is optional
            if self.data_root and not is_uri(self.data_root) and not Path(
                    self.data_root).exists():
                raise OptionsError(f"--data-root {self.data_root!r} does not exist")
        elif self.dataset != "synthetic":
            if not self.data_root:
                raise OptionsError(
                    f"--dataset {self.dataset} needs --data-root pointing at its files"
                )
            if not is_uri(self.data_root) and not Path(self.data_root).exists():
                raise OptionsError(f"--data-root {self.data_root!r} does not exist")
            if not is_uri(self.data_root) and not Path(self.data_root).is_dir():
                raise OptionsError(f"--data-root {self.data_root!r} is not a directory")
        check_folder_options(self.dataset, self.data_root, self.ignore_index, self.num_classes)
        if self.backbone_weights and os.path.isdir(self.backbone_weights):
            raise OptionsError(f"--backbone-weights {self.backbone_weights!r} is a directory; "
                               "give the weights file")
        if self.backbone_weights and not os.path.isfile(self.backbone_weights):
            raise OptionsError(f"--backbone-weights {self.backbone_weights!r} does not exist")
        from autoloss_app.plugins import check_plugins

        # a user's --model/--dataset MODULE:FUNCTION: imported, called and probed here
        extra = self.extra_config
        check_plugins(model=self.model, dataset=self.dataset, data_root=self.data_root,
                      num_classes=self.num_classes, image_size=self.image_size, seed=self.seed,
                      splits=[extra.get("split", "train"), extra.get("eval_split")],
                      dataset_options=extra.get("dataset_options"),
                      backbone_weights=self.backbone_weights)

    def _validate_answer_and_ppo_options(self) -> None:
        """--answer, --playoff-k/-seeds and PPO2's --startup/--advantages/--mirrored."""
        from autoloss_ray.answer import check_answer

        try:
            check_answer(self.answer, self.searcher)
        except ValueError as exc:
            raise OptionsError(str(exc)) from None
        for name in ("playoff_k", "playoff_seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionsError(f"--{name.replace('_', '-')} must be an int >= 1, "
                                   f"got {value!r}")
        check_choice(self.startup, STARTUPS, "--startup")
        check_choice(self.advantages, ADVANTAGES, "--advantages")
        changed = [f"--{k}" for k in ("startup", "advantages", "mirrored")
                   if getattr(self, k) != getattr(PPO2_DEFAULTS, k)]
        if changed and self.searcher != "ppo":
            raise OptionsError(f"{', '.join(changed)}: options of PPO2 (--searcher ppo); "
                               f"--searcher {self.searcher} has no policy to start or update")

    def _validate_scheduler(self) -> None:
        """--scheduler, --grace-period, --reduction-factor."""
        check_choice(self.scheduler, SCHEDULERS, "--scheduler")
        if self.scheduler == "fifo" and (self.grace_period is not None
                                         or self.reduction_factor is not None):
            raise OptionsError("--grace-period and --reduction-factor are options of "
                               "--scheduler asha; --scheduler fifo stops no trial early")
        if self.scheduler == "asha":
            try:
                self.rungs()
            except ValueError as exc:
                raise OptionsError(str(exc)) from None

    def rungs(self) -> list[int]:
        """The iterations at which trials report their hold-out reward: ASHA's milestones
        below ``iterations`` (:func:`asha_rungs`); none with ``--scheduler fifo``."""
        if self.scheduler != "asha" or self.iterations is None:
            return []
        return asha_rungs(self.iterations, *self.asha_settings())

    def asha_settings(self) -> tuple[int, float]:
        """(grace period, reduction factor) of ``--scheduler asha``, defaults filled in: the
        grace period is a quarter of the iterations, the factor DEFAULT_REDUCTION_FACTOR."""
        grace = (max(1, (self.iterations or 4) // 4) if self.grace_period is None
                 else self.grace_period)
        factor = (DEFAULT_REDUCTION_FACTOR if self.reduction_factor is None
                  else self.reduction_factor)
        return grace, factor

    def trial_config(self) -> dict[str, Any]:
        """The constant part of every trial's config (the searcher adds ``theta``)."""
        config: dict[str, Any] = {
            "metric": self.metric,
            "parameterization": self.parameterization,
            "dataset": self.dataset,
            # trials run in their own working directory: pass an absolute path
            "data_root": (self.data_root if not self.data_root or is_uri(self.data_root)
                          else os.path.abspath(self.data_root)),
            "model": self.model,
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "image_size": (self.image_size if self.image_size is None
                           or isinstance(self.image_size, int) else list(self.image_size)),
            "eval_protocol": self.eval_protocol,
            "holdout_fraction": self.holdout_fraction,
            "seed": self.seed,
        }
        if not self.crn:
            config["crn"] = False
        if self.train_size:
            config["train_size"] = self.train_size
        if self.num_classes is not None:
            config["num_classes"] = self.num_classes
        if self.ignore_index is not None:
            config["dataset_options"] = {"ignore_index": self.ignore_index}
        if self.backbone_weights:
            config["backbone_weights"] = os.path.abspath(self.backbone_weights)
        if self.scheduler == "asha":
            config["rungs"] = self.rungs()
        config.update(self.extra_config)
        return config

