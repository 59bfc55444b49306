"""The ``autoloss`` command: search, retrain, evaluate, report, export.

Ray is imported lazily, only by the commands that need a cluster (search, retrain).
Bad input exits with status 2 and one line on stderr, before anything is computed or written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from autoloss_app.evaluate import DATASET_HELP, IGNORE_HELP
from autoloss_app.options import (
    DEFAULT_ANSWER,
    DEFAULT_FAILURE_REWARD,
    RECIPES,
    SEARCHERS,
    OptionsError,
    SearchOptions,
)
from autoloss_app.resume import options_from_manifest
from autoloss_ray.search.config import PPO2Config
from autoloss_ray.vocabulary import EVAL_PROTOCOLS

__all__ = ["main", "build_parser", "add_search_arguments", "search_options_from_args"]

_METRIC_HELP = (
    "target metric: miou, fwiou, biou, bf1, macc, gacc, or a sum such as miou+biou"
)


# PPO2's settings that are options of a search: the PPO2Config fields SearchOptions has (the
# rest, include_mean and the sigma schedule, follow from them or keep PPO2's defaults)
PPO2_OPTIONS = tuple(f.name for f in dataclasses.fields(PPO2Config)
                     if f.name in {o.name for o in dataclasses.fields(SearchOptions)})


def _add_ppo2_arguments(g: Any) -> None:
    """--sigma, --clip-eps, ... from :class:`PPO2Config`'s fields: default, type, choices and
    help (the fields' metadata) in one place."""
    for f in dataclasses.fields(PPO2Config):
        if f.name not in PPO2_OPTIONS:
            continue
        kw: dict[str, Any] = {"default": f.default}
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif "choices" in f.metadata:
            kw["choices"] = list(f.metadata["choices"])
        else:
            kw["type"] = type(f.default)
        if f.metadata.get("help"):
            kw["help"] = f.metadata["help"]
        g.add_argument("--" + f.name.replace("_", "-"), **kw)


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``autoloss search`` (shared with search.py)."""
    g = p.add_argument_group("what to search")
    g.add_argument("--metric", default="miou", help=_METRIC_HELP + " (default: miou)")
    g.add_argument(
        "--parameterization",
        default="bezier",
        choices=["bezier", "bezier1", "linear", "identity"],
        help="curve family h(x) (default: bezier, 2 quadratic segments)",
    )
    g.add_argument(
        "--searcher", default="ppo", choices=list(SEARCHERS),
        help="ppo: PPO2 (the paper); random: uniform random search; tpe, cmaes: optuna's "
        "TPE / CMA-ES through Ray Tune's OptunaSearch (pip install 'autoloss-ray[optuna]'); "
        "every searcher runs --steps x --samples trials (default: ppo)",
    )
    g.add_argument(
        "--crn", action=argparse.BooleanOptionalAction, default=True,
        help="common random numbers: every trial trains with --seed (same weight init and "
        "data order), so rewards differ by the loss alone; --no-crn gives each trial "
        "(step, sample) a training seed of its own, on the same data (default: --crn)",
    )
    g.add_argument("--init-preset", default=None, help="start mu at a paper preset (e.g. miou)")
    g = p.add_argument_group("proxy task")
    g.add_argument(
        "--recipe", default="demo", choices=sorted(RECIPES),
        help="defaults for the proxy task: 'demo' (tiny net, 2 CPU cores, minutes) or "
        "'paper' (DeepLabV3-R50, 128px, 1000 it, M=32, T=12); flags below override it",
    )
    g.add_argument("--dataset", default="synthetic", help=DATASET_HELP)
    g.add_argument("--data-root", default=None, help="dataset directory (not for synthetic)")
    g.add_argument("--ignore-index", type=int, default=None, help=IGNORE_HELP)
    g.add_argument("--model", default=None,
                   help="tiny, lraspp_mobilenet_v3_large, deeplabv3_resnet50, "
                   "deeplabv3_resnet101, fcn_resnet50, or your own network as MODULE:FUNCTION "
                   "(e.g. mymodels:build, mymodels.py in the working folder: called as "
                   "FUNCTION(num_classes=C), returns an nn.Module giving logits [N, C, h, w] "
                   "or a dict with 'out'; the folder is shipped to every Ray worker)")
    g.add_argument("--num-classes", type=int, default=None,
                   help="the class count, for a --dataset MODULE:FUNCTION whose dataset has "
                   "no num_classes attribute")
    g.add_argument("--backbone-weights", default=None,
                   help="local .pth file with backbone weights (never downloaded)")
    g.add_argument("--iterations", type=int, default=None, help="SGD iterations per trial")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--image-size", nargs="+", default=None, metavar="SIZE",
                   help="training crop size: S (square), HxW or H W")
    g.add_argument("--eval-protocol", default=None, choices=list(EVAL_PROTOCOLS),
                   help="how the hold-out reward is scored: 'native' (labels at their own "
                   "resolution, logits upsampled to them) or 'train_size' (image and label "
                   "resized to --image-size; cheaper); default: the recipe's")
    g.add_argument("--train-size", type=int, default=None,
                   help="images the proxy task draws from: the synthetic dataset's length, or a "
                   "seeded subset of a real dataset's training split (0 = all; the demo "
                   "recipe: 192)")
    g.add_argument("--holdout-fraction", type=float, default=None,
                   help="share of the training split held out for the reward")
    g = p.add_argument_group("search (PPO2)")
    g.add_argument("--steps", type=int, default=None, help="T, PPO steps")
    g.add_argument("--samples", type=int, default=None, help="M, trials per step (>= 2)")
    _add_ppo2_arguments(g)
    g.add_argument("--failure-reward", type=float, default=DEFAULT_FAILURE_REWARD,
                   help="reward given to a failed or diverged trial (default "
                   f"{DEFAULT_FAILURE_REWARD:g})")
    g = p.add_argument_group("multi-fidelity (Ray's ASHA scheduler)")
    g.add_argument("--scheduler", default="fifo", choices=["fifo", "asha"],
                   help="'fifo' (every trial trains to the end; default) or 'asha' (trials "
                   "report the hold-out reward, scored at the training size, at ASHA's rungs "
                   "and Ray's ASHAScheduler stops the poor ones; a stopped trial ranks below "
                   "every finished trial of its step)")
    g.add_argument("--grace-period", type=int, default=None,
                   help="--scheduler asha: the first rung, in iterations (default: a quarter "
                   "of --iterations)")
    g.add_argument("--reduction-factor", type=float, default=None,
                   help="--scheduler asha: rungs at grace x factor^k iterations, and the top "
                   "1/factor of a rung go on (default 2)")
    g = p.add_argument_group("cluster and output")
    g.add_argument("--gpus-per-trial", type=float, default=1.0,
                   help="GPUs per trial; fractions pack trials on one GPU; "
                   "an embedded local Ray without GPU runs them on CPU; on a cluster "
                   "they wait for GPU nodes (default 1)")
    g.add_argument("--cpus-per-trial", type=float, default=1.0)
    g.add_argument("--max-concurrent", type=int, default=None,
                   help="trials running at once (default: M)")
    g.add_argument("--address", default=None,
                   help="Ray cluster address ('auto' = the running one); default: the "
                   "cluster of `ray job submit`, else an embedded local Ray")
    g.add_argument("--store", default="runs/store", help="Parquet store: path or URI")
    g.add_argument("--tune-dir", default=None,
                   help="Ray Tune's working directory for trial logs (default: "
                   "<store>/../tune); resume reads the store, not this")
    g.add_argument("--experiment", default="demo", help="experiment name in the store")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted search of the same --experiment from the "
                   "store; options not given are the original search's, options given must "
                   "match them (resources, paths and a larger --steps may change)")
    g.add_argument("--answer", default=DEFAULT_ANSWER,
                   choices=["best-trial", "playoff", "policy-mean"],
                   help="the search's answer (what --export, --report-dir, `autoloss export` "
                   "and `autoloss report` use; recorded in the manifest): 'best-trial' (the "
                   "highest-reward trial; default), 'playoff' (the --playoff-k best trials, "
                   "plus PPO2's last mu, re-trained with --playoff-seeds fresh training seeds "
                   "after the search; the best mean wins) or 'policy-mean' (PPO2 only: the "
                   "mean mu of its best step, the paper's)")
    g.add_argument("--playoff-k", type=int, default=3,
                   help="--answer playoff: how many of the best trials re-train (default 3)")
    g.add_argument("--playoff-seeds", type=int, default=2,
                   help="--answer playoff: fresh training seeds per candidate (default 2)")
    g.add_argument("--export", default=None, help="write the best loss to this JSON file")
    g.add_argument("--report-dir", default=None, help="write a report (Markdown + PNG) here")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def explicit_search_options(argv: Sequence[str]) -> set[str]:
    """The option names (argparse dests) that ``argv`` gives explicitly."""
    probe = argparse.ArgumentParser(add_help=False)
    add_search_arguments(probe)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    given, _ = probe.parse_known_args(list(argv))
    return set(vars(given))


def search_options_from_args(
    args: argparse.Namespace, *, explicit: set[str] | None = None
) -> SearchOptions:
    """SearchOptions of a parsed ``autoloss search`` / ``search.py`` command line.

    With ``--resume`` and ``explicit`` (see :func:`explicit_search_options`), every option the
    command line does not give comes from the search's manifest in the store, so
    ``autoloss search --experiment NAME --store PATH --resume`` continues it as it was started.
    """
    opts = _options_from_args(args)
    if not args.resume or explicit is None:
        return opts
    from autoloss_ray.store import ExperimentStore

    manifest = ExperimentStore(args.store).read_search(args.experiment)
    if manifest is None:
        return opts
    return options_from_manifest(opts, manifest, explicit)


def _options_from_args(args: argparse.Namespace) -> SearchOptions:
    return SearchOptions(
        metric=args.metric,
        parameterization=args.parameterization,
        searcher=args.searcher,
        crn=args.crn,
        recipe=args.recipe,
        dataset=args.dataset,
        data_root=args.data_root,
        ignore_index=args.ignore_index,
        model=args.model,
        num_classes=args.num_classes,
        backbone_weights=args.backbone_weights,
        iterations=args.iterations,
        batch_size=args.batch_size,
        image_size=None if args.image_size is None else _image_size(args.image_size),
        eval_protocol=args.eval_protocol,
        train_size=args.train_size,
        holdout_fraction=args.holdout_fraction,
        steps=args.steps,
        samples=args.samples,
        **{name: getattr(args, name) for name in PPO2_OPTIONS},
        scheduler=args.scheduler,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        init_preset=args.init_preset,
        failure_reward=args.failure_reward,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        max_concurrent=args.max_concurrent,
        store=args.store,
        tune_dir=args.tune_dir,
        experiment=args.experiment,
        seed=args.seed,
        address=args.address,
        resume=args.resume,
        export=args.export,
        report_dir=args.report_dir,
        answer=args.answer,
        playoff_k=args.playoff_k,
        playoff_seeds=args.playoff_seeds,
        verbose=0 if args.quiet else 1,
    )


def _image_size(tokens: Sequence[str]) -> int | tuple[int, int]:
    from autoloss_ray.data.transforms import parse_image_size

    try:
        return parse_image_size(list(tokens))
    except ValueError as exc:
        raise OptionsError(f"--image-size: {exc}") from None


def _cmd_search(args: argparse.Namespace) -> int:
    opts = search_options_from_args(args, explicit=getattr(args, "explicit", None)).resolved()
    # (validates before Ray starts)
    from autoloss_app.search_job import run_search

    outcome = run_search(opts)
    return _finish_search(outcome, "autoloss search")


def _finish_search(outcome: dict[str, Any], prog: str) -> int:
    """Print the outcome; status 1 (and the first trial's error on stderr) when every trial
    of a step failed, 0 otherwise."""
    if outcome.get("failed_step") is not None:
        print(f"{prog}: error: every trial of step {outcome['failed_step']} failed; the first "
              f"one's error: {_one_line(outcome.get('error'))}", file=sys.stderr, flush=True)
        return 1
    _print_outcome(outcome)
    return 0


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:500]


def _print_outcome(outcome: dict[str, Any]) -> None:
    print("[autoloss] done: " + json.dumps(outcome, default=str), flush=True)


def _cmd_export(args: argparse.Namespace) -> int:
    from autoloss_app.option_checks import check_output_file
    from autoloss_ray.export import export_experiment
    from autoloss_ray.store import ExperimentStore

    check_output_file(args.out, "--out")
    path = export_experiment(ExperimentStore(args.store), args.experiment, args.out,
                             num_classes=args.num_classes)
    print(f"[autoloss] wrote {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from autoloss_app.option_checks import check_output_dir
    from autoloss_ray.report import write_search_report
    from autoloss_ray.store import ExperimentStore

    check_output_dir(args.out, "--out")
    store = ExperimentStore(args.store)
    paths = write_search_report(store, args.experiment, args.out, compare=args.compare)
    print(f"[autoloss] report written: {paths}")
    return 0


def _version() -> str:
    """The installed distribution's version (package metadata), e.g. ``"0.1.0"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autoloss-ray")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        from autoloss_ray import __version__

        return f"{__version__} (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoloss",
        description="Search, retrain and evaluate metric surrogate losses for semantic "
        "segmentation (Auto Seg-Loss) on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed autoloss-ray version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("search", help="search a surrogate loss for a metric with PPO2",
                       description="Search the curve parameters of a metric surrogate with "
                       "PPO2 on Ray Tune; every trial lands in the Parquet store.")
    add_search_arguments(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("export", help="write the best searched loss of an experiment as JSON",
                       description="Write the searched loss of an experiment as a loss file that "
                       "SurrogateLoss.from_file loads: the mean mu of the best PPO2 step, or "
                       "the best trial's theta for random, TPE and CMA-ES.")
    p.add_argument("--store", default="runs/store")
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", required=True, help="output .json path")
    p.add_argument("--num-classes", type=int, default=None,
                   help="class count recorded in the file (default: the one the search's "
                   "trials recorded; a store that records none needs it)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="tables and plots from the store",
                       description="Markdown table, reward-per-step plot and searched-curve "
                       "plots for an experiment.")
    p.add_argument("--store", default="runs/store")
    p.add_argument("--experiment", required=True)
    p.add_argument("--compare", action="append", default=[],
                   help="another experiment (e.g. the random-search run) to plot beside it")
    p.add_argument("--out", default="runs/report", help="output directory")
    p.set_defaults(func=_cmd_report)

    from autoloss_app import evaluate, retrain

    retrain.add_commands(sub)
    evaluate.add_command(sub)
    return parser


def search_script_main(argv: list[str] | None = None) -> int:
    """``python search.py`` (for ``ray submit``): the options of ``autoloss search``; joins a
    Ray cluster running on this machine when ``--address`` is not given."""
    parser = argparse.ArgumentParser(
        prog="search.py",
        description="Search a metric surrogate loss with PPO2 on a Ray cluster "
        "(same options as `autoloss search`).",
    )
    add_search_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        opts = search_options_from_args(args, explicit=explicit_search_options(argv))
        if opts.address is None:
            opts = _with_running_cluster(opts)
        opts = opts.resolved()
        from autoloss_app.search_job import run_search

        outcome = run_search(opts)
    except (OptionsError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"search.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("search.py: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return _finish_search(outcome, "search.py")


def _with_running_cluster(opts):
    """Use address='auto' when a Ray cluster runs on this machine (e.g. a `ray up` head)."""
    import dataclasses
    import os

    if os.environ.get("RAY_ADDRESS"):
        return opts
    try:
        from ray._private.services import find_gcs_addresses

        if find_gcs_addresses():
            return dataclasses.replace(opts, address="auto")
    except Exception:  # older/newer Ray: fall back to an embedded cluster
        pass
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if args.command == "search":
            args.explicit = explicit_search_options(argv[argv.index("search") + 1:])
        return int(args.func(args) or 0)
    except (OptionsError, ValueError, TypeError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError) as exc:
        print(f"autoloss {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autoloss {args.command}: interrupted; rerun with --resume to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
