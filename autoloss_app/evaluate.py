"""``autoloss evaluate``: the six metrics of a checkpoint written by ``autoloss retrain`` on a
dataset split (one process, or shards on a Ray Train TorchTrainer with ``--workers N``), and
the scoring options ``retrain`` shares with it (training and inference sizes, protocol)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

from autoloss_ray.vocabulary import EVAL_PROTOCOLS, IGNORE_INDEX

__all__ = ["add_command", "size_option", "inference_option", "PROTOCOL_HELP",
           "INFERENCE_HELP", "DATASET_HELP", "IGNORE_HELP"]


def check_evaluate_options(args: argparse.Namespace) -> None:
    """Refuse bad ``evaluate`` options (:class:`OptionsError`) before anything is loaded, Ray
    started or written."""
    from autoloss_app.option_checks import (
        check_data_root,
        check_finite,
        check_folder_options,
        check_output_dir,
        check_seed,
    )
    from autoloss_app.options import OptionsError
    from autoloss_ray.store import check_name

    for name, low in (("batch_size", 1), ("train_size", 0), ("workers", 1)):
        if getattr(args, name) < low:
            raise OptionsError(f"--{name.replace('_', '-')} must be >= {low}, "
                               f"got {getattr(args, name)}")
    check_seed(args.seed)
    check_finite(gpus_per_worker=args.gpus_per_worker)
    if args.gpus_per_worker < 0:
        raise OptionsError(f"--gpus-per-worker must be >= 0, got {args.gpus_per_worker}")
    if bool(args.store) != bool(args.experiment):
        raise OptionsError("--store and --experiment go together: give both to write a row "
                           "(kind evaluate) into the store, or neither")
    if args.train_size and args.workers > 1 and args.dataset != "synthetic":
        raise OptionsError(f"--train-size with --workers > 1 takes only the synthetic dataset "
                           f"(its length); to score a subset of {args.dataset}, use --workers 1")
    if args.store:
        check_name(args.experiment, "experiment")
        check_output_dir(args.store, "--store")
    check_data_root(args.dataset, args.data_root)
    check_folder_options(args.dataset, args.data_root, args.ignore_index)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from autoloss_app.options import OptionsError
    from autoloss_ray.checkpoint import load_checkpoint
    from autoloss_ray.data import build_dataset
    from autoloss_ray.train import evaluate_model, resolve_device

    check_evaluate_options(args)
    from autoloss_ray.data import check_data
    from autoloss_ray.data.transforms import parse_image_size

    image_size = (size_option(args.image_size, "--image-size") if args.image_size
                  else None)
    inference_size = inference_option(args.inference_size)
    from autoloss_app.plugins import check_plugins, working_folder_on_path

    working_folder_on_path()  # the checkpoint of a --model MODULE:FUNCTION imports it
    model, meta = load_checkpoint(args.checkpoint)
    synthetic = args.dataset == "synthetic"
    options = {"length": args.train_size} if args.train_size and synthetic else {}
    if args.dataset == "folder":  # the checkpoint's ignore index unless --ignore-index
        options["ignore_index"] = (args.ignore_index if args.ignore_index is not None
                                   else int(meta.get("ignore_index", IGNORE_INDEX)))
    if ":" in args.dataset:  # a user's MODULE:FUNCTION dataset, of the checkpoint's classes
        options = {"num_classes": int(meta["num_classes"])}
        check_plugins(model=None, dataset=args.dataset, data_root=args.data_root,
                      num_classes=options["num_classes"],
                      image_size=image_size or parse_image_size(meta["image_size"]),
                      seed=args.seed, splits=[args.split])
    check_data(args.dataset, root=args.data_root, splits=[args.split], dataset_options=options)
    dataset = build_dataset(args.dataset, root=args.data_root, split=args.split,
                            image_size=image_size or parse_image_size(meta["image_size"]),
                            train=False, seed=args.seed, eval_protocol=args.eval_protocol,
                            inference_size=inference_size, **options)
    if args.train_size and not synthetic:  # a seeded subset, as search/retrain take theirs
        from autoloss_ray.data import subset

        dataset = subset(dataset, args.train_size, seed=args.seed)
    if dataset.num_classes != int(meta["num_classes"]):
        raise ValueError(
            f"checkpoint {args.checkpoint!r} was trained for {meta['num_classes']} classes but "
            f"dataset {args.dataset!r} has {dataset.num_classes}"
        )
    from autoloss_ray.metrics._labels import check_boundary_classes

    try:
        check_boundary_classes(args.boundary_classes, args.background_index, dataset.num_classes)
    except (TypeError, ValueError) as exc:
        raise OptionsError(f"--boundary-classes/--background-index: {exc}") from None
    boundary = {"boundary_classes": args.boundary_classes,
                "background_index": args.background_index}
    if args.workers > 1:  # sharded over a Ray Train TorchTrainer, counts all-reduced
        from autoloss_app.plugins import plugin_runtime_env
        from autoloss_app.ray_start import init_ray
        from trainables.retrain_ddp import evaluate_with_workers

        init_ray(args.address, runtime_env=plugin_runtime_env(
            [meta["model"], args.dataset], exclude=[args.store, args.data_root]))
        from autoloss_app.placement import check_placeable

        check_placeable(
            {"CPU": args.workers,
             **({"GPU": args.workers * args.gpus_per_worker} if args.gpus_per_worker else {})},
            what=f"evaluate --workers {args.workers}", address=args.address,
            fix="use fewer --workers, or --address of a cluster")
        device = "cuda" if args.gpus_per_worker > 0 else "cpu"
        metrics = evaluate_with_workers(
            args.checkpoint, dict(
                name=args.dataset, root=args.data_root, split=args.split,
                image_size=image_size or parse_image_size(meta["image_size"]), train=False,
                seed=args.seed, eval_protocol=args.eval_protocol,
                inference_size=inference_size, **options),
            workers=args.workers, gpus_per_worker=args.gpus_per_worker,
            batch_size=args.batch_size,
            storage=os.path.join(tempfile.gettempdir(), "autoloss-evaluate"), **boundary)
    else:
        device = resolve_device(args.device)
        model.to(device)
        metrics = evaluate_model(
            model, dataset, num_classes=dataset.num_classes, ignore_index=dataset.ignore_index,
            boundary_tolerance=int(meta.get("boundary_tolerance", 5)), device=device,
            batch_size=args.batch_size, **boundary,
        )
    from autoloss_ray.metrics import METRICS

    print("| checkpoint | mIoU | FWIoU | BIoU | BF1 | mAcc | gAcc |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {os.path.basename(args.checkpoint)} | "
          + " | ".join(f"{100 * metrics[k]:.2f}" for k in METRICS) + " |")
    if args.json:
        print(json.dumps(metrics))
    if args.store:
        import uuid

        from autoloss_ray.store import ExperimentStore

        ExperimentStore(args.store).write_trial({
            "experiment": args.experiment, "trial_id": uuid.uuid4().hex[:12], "kind": "evaluate",
            "loss": os.path.basename(args.checkpoint), "status": "ok", "dataset": args.dataset,
            "model": meta["model"], "checkpoint": os.path.abspath(args.checkpoint),
            "device": str(device), "eval_protocol": args.eval_protocol, **metrics,
            **({"extra": boundary} if args.boundary_classes != "all" else {}),
        })
    return 0


def size_option(tokens: Any, flag: str) -> int | tuple[int, int]:
    from autoloss_app.options import OptionsError
    from autoloss_ray.data.transforms import parse_image_size

    try:
        return parse_image_size(list(tokens) if isinstance(tokens, (list, tuple)) else tokens)
    except ValueError as exc:
        raise OptionsError(f"{flag}: {exc}") from None


def inference_option(tokens: Any) -> str | tuple[int, int] | None:
    from autoloss_ray.data.transforms import as_size

    if tokens is None:
        return None
    if list(tokens) == ["native"]:
        return "native"
    return as_size(size_option(tokens, "--inference-size"))


DATASET_HELP = (
    "synthetic (default, built in), camvid, voc, cityscapes, or folder: your own data in "
    "--data-root DIR as images/<stem>.jpg|png, masks/<stem>.png (class ids), classes.txt (one "
    "name per line) and optional splits/{train,val,test}.txt; or your own dataset function as "
    "MODULE:FUNCTION (e.g. mydata:build, called as FUNCTION(split=, train=, seed=, "
    "image_size=(h, w), root=) with the keywords it names, returning a torch Dataset of "
    "(image [3, H, W] float, label [H, W] long) with num_classes)"
)
IGNORE_HELP = (f"--dataset folder: the mask value that marks unlabelled pixels "
               f"(default {IGNORE_INDEX})")
PROTOCOL_HELP = (
    "'native' (default): every label map at its own resolution, the argmax of the logits "
    "upsampled bilinearly to it; 'train_size': image and label resized to the training size"
)
INFERENCE_HELP = (
    "native protocol: the size the whole image is fed at: HxW, H W, S (square) or 'native' "
    "(default: shorter side = the training size's shorter side, aspect ratio kept)"
)


def add_command(sub: Any) -> None:
    """Register ``evaluate`` on the ``autoloss`` subparsers."""
    p = sub.add_parser(
        "evaluate", help="the six metrics of a saved model on a dataset split",
        description="Evaluate a checkpoint written by `autoloss retrain` on any split.",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="synthetic", help=DATASET_HELP)
    p.add_argument("--data-root", default=None, help="dataset directory (not for synthetic)")
    p.add_argument("--ignore-index", type=int, default=None,
                   help=IGNORE_HELP.replace(f"(default {IGNORE_INDEX})",
                                            "(default: the checkpoint's)"))
    p.add_argument("--split", default="val", help="the split to score (default val; the "
                   "folder dataset: train, or a splits/<name>.txt such as val or test)")
    p.add_argument("--image-size", nargs="+", default=None, metavar="SIZE",
                   help="the training size: S, HxW or H W (default: the checkpoint's)")
    p.add_argument("--eval-protocol", default="native", choices=list(EVAL_PROTOCOLS),
                   help=PROTOCOL_HELP)
    p.add_argument("--inference-size", nargs="+", default=None, metavar="SIZE",
                   help=INFERENCE_HELP)
    p.add_argument("--train-size", type=int, default=0, help="synthetic: the dataset's length; "
                   "another dataset: score a seeded random subset of N images of --split (by "
                   "--seed; 0: all)")
    p.add_argument("--boundary-classes", default="all", choices=["all", "foreground"],
                   help="the classes whose boundaries BIoU's band and BF1's class set use: "
                   "'all' (default) or 'foreground' (all but --background-index, as the "
                   "official VOC evaluation, for numbers comparable to the paper's)")
    p.add_argument("--background-index", type=int, default=0,
                   help="with --boundary-classes foreground: the class left out (default 0)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.add_argument("--store", default=None,
                   help="also write a row (kind evaluate) into this store (with --experiment)")
    p.add_argument("--experiment", default=None,
                   help="with --store: the experiment the row belongs to")
    p.add_argument("--workers", type=int, default=1,
                   help="> 1: evaluate shards on a Ray Train TorchTrainer of N workers (the "
                   "integer counts are summed: the same numbers as one process)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--address", default=None, help="with --workers > 1: the Ray cluster")
    p.set_defaults(func=_cmd_evaluate)
