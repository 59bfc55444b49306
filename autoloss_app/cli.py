"""The ``autoloss`` command: search, retrain, evaluate, report, export.

Ray is imported lazily, only by the commands that need a cluster (search, retrain).
Bad input exits with status 2 and one line on stderr, before anything is computed or written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from typing import Any

from autoloss_app.option_checks import DEFAULT_STORE
from autoloss_app.options import OptionsError, SearchOptions
from autoloss_app.resume import options_from_manifest
from autoloss_ray.search.config import PPO2Config

__all__ = ["main", "build_parser", "add_search_arguments", "search_options_from_args"]


# PPO2's settings that are options of a search: the PPO2Config fields SearchOptions has (the
# rest, include_mean and the sigma schedule, follow from them or keep PPO2's defaults)
PPO2_OPTIONS = tuple(f.name for f in dataclasses.fields(PPO2Config)
                     if f.name in {o.name for o in dataclasses.fields(SearchOptions)})

# The flags of `autoloss search` (and search.py): the SearchOptions fields of each help
# section, in --help's order; each flag is --<field name with '-'>, generated from its field
# (_add_option_argument). Besides these: -q/--quiet (verbose=0).
SEARCH_ARGUMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("what to search", ("metric", "parameterization", "searcher", "crn", "init_preset")),
    ("proxy task", ("recipe", "dataset", "data_root", "ignore_index", "model", "num_classes",
                    "backbone_weights", "iterations", "batch_size", "image_size",
                    "eval_protocol", "train_size", "holdout_fraction")),
    ("search (PPO2)", ("steps", "samples", *PPO2_OPTIONS, "failure_reward")),
    ("multi-fidelity (Ray's ASHA scheduler)", ("scheduler", "grace_period",
                                               "reduction_factor")),
    ("cluster and output", ("gpus_per_trial", "cpus_per_trial", "max_concurrent", "address",
                            "store", "tune_dir", "experiment", "seed", "resume", "answer",
                            "playoff_k", "playoff_seeds", "export", "report_dir")),
)
# the SearchOptions fields that are flags of their own
SEARCH_FIELDS = tuple(name for _, names in SEARCH_ARGUMENTS for name in names)
_FIELDS = {f.name: f for f in dataclasses.fields(SearchOptions)}
_HINTS = typing.get_type_hints(SearchOptions)


def _field_type(f: dataclasses.Field) -> Any:
    """argparse's ``type`` of a field: its annotation's int or float (also of ``X | None``);
    None (a string) for the rest."""
    hint = _HINTS[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if len(args) != 1:
        raise TypeError(f"SearchOptions.{f.name}: no argparse type for {hint}; give the "
                        "field nargs (and a conversion in _options_from_args)")
    return args[0] if args[0] in (int, float) else None


def _add_option_argument(g: Any, name: str) -> None:
    """The flag --<name> from the SearchOptions field ``name``: its default, and from its
    metadata (:func:`autoloss_app.options.option`) the help (``%(default)s`` filled in here,
    so that every reader of the parser, the docs' included, sees the same text), choices,
    nargs, metavar and action; a bool without an action is --<name>/--no-<name>, a field of
    another type takes its annotation's int or float."""
    f = _FIELDS[name]
    meta = dict(f.metadata)
    help_text = meta.pop("help", None)
    kw: dict[str, Any] = {"default": f.default}
    if "choices" in meta:
        kw["choices"] = list(meta.pop("choices"))
    kw.update(meta)  # nargs, metavar, action
    if "action" not in kw and isinstance(f.default, bool):
        kw["action"] = argparse.BooleanOptionalAction
    elif not {"action", "choices", "nargs"} & set(kw):
        field_type = _field_type(f)
        if field_type is not None:
            kw["type"] = field_type
    if help_text:
        kw["help"] = help_text % {"default": f.default}
    g.add_argument("--" + name.replace("_", "-"), **kw)


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``autoloss search`` (shared with search.py), generated from the fields of
    :class:`SearchOptions` (:data:`SEARCH_ARGUMENTS`)."""
    for title, names in SEARCH_ARGUMENTS:
        group = p.add_argument_group(title)
        for name in names:
            _add_option_argument(group, name)
    # (in the last section, cluster and output)
    group.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


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
    values = {name: getattr(args, name) for name in SEARCH_FIELDS}
    if args.image_size is not None:
        values["image_size"] = _image_size(args.image_size)
    return SearchOptions(**values, verbose=0 if args.quiet else 1)


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
                       "SurrogateLoss.from_file loads: the search's answer under the --answer "
                       "rule its manifest records (default: the best trial's theta; searches "
                       "from before that option: PPO2's best-step mean, the others' best "
                       "trial).")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", required=True, help="output .json path")
    p.add_argument("--num-classes", type=int, default=None,
                   help="class count recorded in the file (default: the one the search's "
                   "trials recorded; a store that records none needs it)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="tables and plots from the store",
                       description="Markdown table, reward-per-step plot and searched-curve "
                       "plots for an experiment.")
    p.add_argument("--store", default=DEFAULT_STORE)
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
