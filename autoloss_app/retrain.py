"""``autoloss retrain`` (imports ray lazily; ``autoloss evaluate`` is :mod:`autoloss_app.evaluate`).

A loss SPEC is one of:
  ce | wce | dpce | ssim | dice | lovasz     a hand-designed baseline
  preset:NAME                                the paper's released curves for metric NAME
  experiment:NAME                            the best searched loss of a store experiment
  file:PATH.json  (or PATH.json)             a loss file written by `autoloss export`
Every SPEC is resolved and validated before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from typing import Any

from autoloss_app.evaluate import (
    DATASET_HELP,
    IGNORE_HELP,
    INFERENCE_HELP,
    PROTOCOL_HELP,
    inference_option,
    size_option,
)
from autoloss_app.loss_specs import place_losses, safe_name, stage_losses
from autoloss_app.option_checks import DEFAULT_STORE
from autoloss_ray.vocabulary import EVAL_PROTOCOLS

MODEL_HELP = (
    "tiny, lraspp_mobilenet_v3_large, deeplabv3_resnet50, deeplabv3_resnet101, fcn_resnet50, "
    "or your own network as MODULE:FUNCTION (e.g. mymodels:build with mymodels.py in the "
    "working folder), called as FUNCTION(num_classes=C), returning an nn.Module whose output "
    "is logits [N, C, h, w] or a dict with 'out'"
)

__all__ = ["RetrainPaths", "retrain_paths", "add_commands"]


@dataclass(frozen=True)
class RetrainPaths:
    """Where ``autoloss retrain`` writes besides the store."""

    checkpoint_dir: str  # the weights and the resolved loss files: plain files
    train_storage: str  # Ray Train's storage_path (--workers > 1): a path or a URI
    tune_storage: str | None  # Ray Tune's storage_path; None: Ray's default (~/ray_results)


def retrain_paths(store: str, experiment: str, checkpoint_dir: str | None) -> RetrainPaths:
    """The places of :class:`RetrainPaths` for a store root (a path or a URI).

    A local store: all next to it, ``<store>/../retrain/<experiment>``, ``<store>/../train``
    and ``<store>/../tune`` (``checkpoint_dir`` overrides the first). A store URI
    (``s3://bucket/prefix?...``): Ray Train's checkpoints go under the store URI
    (``<uri>/train``, which every node reaches, as Ray Train needs on several nodes) and Tune's
    trial logs to Ray's default place, as ``autoloss search`` does with such a store; the
    weights are written and read (``autoloss evaluate``) as plain files, so a store URI needs
    ``checkpoint_dir``: raises :class:`OptionsError` without it, or when it is a URI itself.
    """
    from autoloss_app.option_checks import is_uri
    from autoloss_app.options import OptionsError
    from autoloss_ray.store._atomic import sub_uri

    if checkpoint_dir is not None and is_uri(checkpoint_dir):
        raise OptionsError(
            f"--checkpoint-dir must be a directory path (a shared file system on a multi-node "
            f"cluster), got the URI {checkpoint_dir!r}: the weights are written as plain files")
    if not is_uri(store):
        parent = os.path.dirname(os.path.abspath(store))
        return RetrainPaths(
            checkpoint_dir=os.path.abspath(checkpoint_dir
                                           or os.path.join(parent, "retrain", experiment)),
            train_storage=os.path.join(parent, "train"),
            tune_storage=os.path.join(parent, "tune"))
    if checkpoint_dir is None:
        raise OptionsError(
            f"--store {store!r} is a URI: pass --checkpoint-dir, a directory for the weights "
            "that every node can write and `autoloss evaluate` can read (a shared file system "
            "on a multi-node cluster)")
    return RetrainPaths(checkpoint_dir=os.path.abspath(checkpoint_dir),
                        train_storage=sub_uri(store, "train"),
                        tune_storage=None)


class _ByLoss:
    """Picklable ``tune.sample_from`` function: a value chosen by the trial's ``loss``."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def __call__(self, config: Any) -> str:
        return self.mapping[config["loss"]]


class _CheckpointPath:
    """Picklable ``tune.sample_from`` function: ``<dir>/<label>[-seed<N>].pt`` for a trial."""

    def __init__(self, out_dir: str, labels: dict[str, str], with_seed: bool) -> None:
        self.out_dir, self.labels, self.with_seed = out_dir, labels, with_seed

    def __call__(self, config: Any) -> str:
        name = safe_name(self.labels[config["loss"]])
        if self.with_seed:
            name += f"-seed{int(config['seed'])}"
        return os.path.join(self.out_dir, f"{name}.pt")


def _cmd_retrain(args: argparse.Namespace) -> int:
    from autoloss_app.options import OptionsError
    from autoloss_ray.metrics import parse_metric
    from autoloss_ray.store import ExperimentStore, check_name, failed_mask, ok_mask

    parse_metric(args.metric)
    check_name(args.experiment, "experiment")
    check_retrain_options(args)
    if not args.loss:
        raise OptionsError("give at least one --loss SPEC (e.g. --loss ce --loss preset:miou)")
    from autoloss_app.option_checks import check_data_root

    check_data_root(args.dataset, args.data_root)
    if os.path.isfile(args.store):
        raise OptionsError(f"--store {args.store!r} is an existing file; give a directory path")
    paths = retrain_paths(args.store, args.experiment, args.checkpoint_dir)
    image_size = size_option(args.image_size, "--image-size")
    inference_size = inference_option(args.inference_size)
    from autoloss_ray.data import check_data

    check_data(args.dataset, root=args.data_root, splits=["train", args.eval_split],
               dataset_options=_dataset_options(args))
    out_dir = paths.checkpoint_dir
    if args.repeats < 1:
        raise OptionsError(f"--repeats must be >= 1, got {args.repeats}")
    if args.workers < 1:
        raise OptionsError(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1 and args.batch_size % args.workers:
        raise OptionsError(f"--batch-size {args.batch_size} must be a multiple of --workers "
                           f"{args.workers} (each worker takes an equal part of every batch)")
    if args.gpus_per_worker < 0 or args.max_failures < 0 or args.checkpoint_every < 0:
        raise OptionsError("--gpus-per-worker, --max-failures and --checkpoint-every must be "
                           ">= 0")
    # every --loss read and checked before the store is touched: a bad one changes nothing
    staging, staged = stage_losses(args.loss, metric=args.metric, store=args.store)
    try:
        store = ExperimentStore(args.store)
        store.check_writable()  # before anything trains: a refused row is a lost retrain
        earlier = store.trials(args.experiment)
        if len(earlier) and ok_mask(earlier).any():
            raise OptionsError(
                f"experiment {args.experiment!r} already has rows in {args.store}; choose "
                "another --experiment"
            )
        if len(earlier):  # only failed or diverged rows: nothing to keep; the name is free
            for trial_id in earlier["trial_id"]:
                store.filesystem.delete_file(store.trial_path(args.experiment, str(trial_id)))
            print(f"[autoloss] experiment {args.experiment!r}: removed {len(earlier)} row(s) "
                  "of an earlier retrain in which no loss trained without failing", flush=True)
        specs = place_losses(staging, staged, os.path.join(out_dir, "losses"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    from ray import tune

    from autoloss_app.plugins import plugin_runtime_env
    from autoloss_app.ray_start import init_ray
    from trainables import StoreCallback, retrain_task, with_gpu_resources

    # a --model/--dataset module of the working folder: shipped to every worker
    init_ray(args.address, runtime_env=plugin_runtime_env(
        [args.model, args.dataset], exclude=[args.store, out_dir, args.data_root]))
    from autoloss_app.placement import check_placeable

    if args.workers > 1:  # the Tune trial (1 CPU) and its Ray Train worker group, at once
        check_placeable(
            {"CPU": 1 + args.workers * args.cpus_per_trial,
             **({"GPU": args.workers * args.gpus_per_worker} if args.gpus_per_worker else {})},
            what=f"retrain --workers {args.workers}", address=args.address,
            fix="use fewer --workers or a smaller --cpus-per-trial, or --address of a cluster")
    else:
        check_placeable({"CPU": args.cpus_per_trial}, what="a retrain trial",
                        address=args.address, fix="use a smaller --cpus-per-trial")
    labels = {s.loss: s.label for s in specs}
    config = {
        "metric": args.metric,
        "loss": tune.grid_search([s.loss for s in specs]),
        "loss_label": tune.sample_from(_ByLoss(labels)),
        "save_checkpoint": tune.sample_from(_CheckpointPath(out_dir, labels, args.repeats > 1)),
        "dataset": args.dataset,
        "data_root": os.path.abspath(args.data_root) if args.data_root else None,
        "dataset_options": _dataset_options(args),
        "model": args.model,
        "num_classes": getattr(args, "num_classes", None),
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "image_size": image_size if isinstance(image_size, int) else list(image_size),
        "eval_protocol": args.eval_protocol,
        "inference_size": (list(inference_size) if isinstance(inference_size, tuple)
                           else inference_size),
        "train_size": args.train_size,
        "eval_split": args.eval_split,
        "seed": (args.seed if args.repeats == 1
                 else tune.grid_search([args.seed + i for i in range(args.repeats)])),
    }
    if args.workers > 1:  # one Ray Train TorchTrainer per loss (trainables.retrain_ddp)
        from trainables.retrain_ddp import retrain_ddp_task

        config.update({
            "workers": args.workers, "gpus_per_worker": args.gpus_per_worker,
            "cpus_per_worker": args.cpus_per_trial, "max_failures": args.max_failures,
            "checkpoint_every": args.checkpoint_every, "loss_sync": args.loss_sync,
            "train_storage": paths.train_storage,
        })
        trainable = retrain_ddp_task
    else:
        trainable = with_gpu_resources(retrain_task, gpus_per_trial=args.gpus_per_trial,
                                       cpus_per_trial=args.cpus_per_trial)
    tuner = tune.Tuner(
        trainable,
        param_space=config,
        tune_config=tune.TuneConfig(max_concurrent_trials=args.max_concurrent),
        run_config=tune.RunConfig(
            name=args.experiment,
            storage_path=paths.tune_storage,
            callbacks=[StoreCallback(store.root, args.experiment, args.metric, kind="retrain")],
            verbose=0,
        ),
    )
    tuner.fit()
    from autoloss_ray.report import results_table

    rows = store.trials(args.experiment)
    if ok_mask(rows).any():
        print(results_table(rows))
    failed = rows[~ok_mask(rows)]
    for _, row in failed.iterrows():
        print(f"[autoloss] {row['loss']}: {row['status']}: {row['error']}")
    errors = rows[failed_mask(rows)]
    if len(rows) and len(errors) == len(rows):
        import sys

        first = " ".join(str(errors.iloc[0]["error"]).split())[:500]
        print(f"autoloss retrain: error: every trial failed; the first one's error: {first}",
              file=sys.stderr, flush=True)
    elif not ok_mask(rows).any():
        import sys

        print("autoloss retrain: error: no loss trained without failing (see the lines above)",
              file=sys.stderr, flush=True)
    return 0 if len(failed) == 0 and len(rows) else 1


def _dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset's keyword arguments from the options (the folder dataset's ignore index)."""
    return {} if args.ignore_index is None else {"ignore_index": args.ignore_index}


def check_retrain_options(args: argparse.Namespace) -> None:
    """The option checks of ``autoloss retrain`` that need no compute: finiteness, resources,
    and the checks each trial makes on its config (``check_trial_config``, one definition)."""
    from autoloss_app.option_checks import (
        check_finite,
        check_folder_options,
        check_max_concurrent,
        check_seed,
    )
    from autoloss_app.options import OptionsError, check_resources
    from autoloss_ray.train import check_trial_config

    check_finite(**vars(args))
    check_folder_options(args.dataset, args.data_root, args.ignore_index)
    check_resources(args.gpus_per_trial, args.cpus_per_trial)
    check_max_concurrent(args.max_concurrent)
    check_seed(args.seed)
    try:
        check_trial_config({
            "metric": args.metric, "dataset": args.dataset, "model": args.model,
            "iterations": args.iterations, "batch_size": args.batch_size,
            "image_size": args.image_size, "train_size": args.train_size,
            "eval_split": args.eval_split, "seed": args.seed, "loss": "ce",
        })
    except (ValueError, TypeError) as exc:
        raise OptionsError(str(exc)) from None
    from autoloss_app.plugins import check_plugins

    # a user's --model/--dataset MODULE:FUNCTION: imported, called and probed before Ray
    check_plugins(model=args.model, dataset=args.dataset, data_root=args.data_root,
                  num_classes=getattr(args, "num_classes", None), image_size=args.image_size,
                  seed=args.seed, splits=["train", args.eval_split])


def add_commands(sub: Any) -> None:
    """Register ``retrain`` on the ``autoloss`` subparsers."""
    p = sub.add_parser(
        "retrain", help="train with searched, preset and baseline losses; compare on val",
        description="Train one network per --loss (parallel Ray trials) on the full training "
        "split, evaluate all six metrics on --eval-split, store rows and weights.",
        epilog=__doc__.split("\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--loss", action="append", default=[], metavar="SPEC",
                   help="a loss to train with (repeat): ce, lovasz, preset:miou, "
                   "experiment:NAME, file:PATH.json ...")
    p.add_argument("--metric", default="miou", help="the metric the table's reward is")
    p.add_argument("--dataset", default="synthetic", help=DATASET_HELP)
    p.add_argument("--data-root", default=None, help="dataset directory (not for synthetic)")
    p.add_argument("--ignore-index", type=int, default=None, help=IGNORE_HELP)
    p.add_argument("--eval-split", default="val", help="split to evaluate on (default val)")
    p.add_argument("--model", default="tiny", help=MODEL_HELP + " (default: tiny)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="the class count, for a --dataset MODULE:FUNCTION whose dataset has "
                   "no num_classes attribute")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", nargs="+", default=["64"], metavar="SIZE",
                   help="training crop size: S (square), HxW or H W (default 64)")
    p.add_argument("--eval-protocol", default="native", choices=list(EVAL_PROTOCOLS),
                   help=PROTOCOL_HELP)
    p.add_argument("--inference-size", nargs="+", default=None, metavar="SIZE",
                   help=INFERENCE_HELP)
    p.add_argument("--train-size", type=int, default=0,
                   help="synthetic: dataset length; others: a seeded subset (0 = all)")
    p.add_argument("--gpus-per-trial", type=float, default=1.0)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--experiment", default="retrain")
    p.add_argument("--checkpoint-dir", default=None,
                   help="where weights go (default <store>/../retrain/<experiment>; "
                   "required with a store URI: a shared file system on a multi-node cluster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per loss with seeds seed..seed+repeats-1 (the table averages them)")
    p.add_argument("--address", default=None)
    p.add_argument("--workers", type=int, default=1,
                   help="data-parallel workers per loss: > 1 trains each loss on a Ray Train "
                   "TorchTrainer (DDP; NCCL on GPUs, Gloo on CPU); 1 = one process per loss")
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="with --workers > 1: GPUs per worker (0 = CPU workers)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="with --workers > 1: restarts from the last checkpoint after a worker "
                   "dies")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="with --workers > 1: iterations between Ray Train checkpoints (0: none)")
    p.add_argument("--loss-sync", choices=("none", "ddp"), default="none",
                   help="with --workers > 1: 'ddp' sums a surrogate's statistics over the "
                   "workers (the global-batch loss); 'none' pools per worker (the paper)")
    p.set_defaults(func=_cmd_retrain)
