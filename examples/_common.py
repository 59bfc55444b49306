"""What the framework examples beside this file share, so that each of them shows only its
framework's part (how the searched loss plugs into Lightning, smp or mmengine).

Shared here: the common command-line flags and their checks, the train / validation sets and
the searched loss for their class count, the exact validation metrics, the ``RESULT {json}``
line and the one-line error exit. The examples run as scripts (``python examples/X.py``, or from
inside ``examples/``), so Python finds this module beside them. No framework is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from autoloss_ray import MetricAccumulator, SurrogateLoss
from autoloss_ray.data import DATASETS, build_dataset, subset
from autoloss_ray.data.base import SegmentationDataset, SegmentationSubset
from autoloss_ray.models import MODELS
from autoloss_ray.vocabulary import METRICS

Split = SegmentationDataset | SegmentationSubset

# the flags every example refuses below 1 (parse_checked's default)
AT_LEAST_ONE = ("image_size", "batch_size", "max_steps")


def new_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc`` (the example's docstring) that
    shows each flag's default in ``--help``."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_loss_and_data_args(parser: argparse.ArgumentParser) -> None:
    """``--loss``, ``--dataset``, ``--data-root``, ``--val-split``: what :func:`sets_and_loss`
    takes."""
    parser.add_argument("--loss", default="preset:miou",
                        help="the loss: preset:NAME (the paper's curves), file:PATH or PATH.json "
                             "(a loss written by autoloss search --export / autoloss export)")
    parser.add_argument("--dataset", default="synthetic", choices=sorted(DATASETS),
                        help="a dataset of autoloss_ray.data (folder: your own, see "
                             "docs/own-task.md)")
    parser.add_argument("--data-root", default=None,
                        help="the dataset's folder (not for synthetic)")
    parser.add_argument("--val-split", default="val",
                        help="split the metrics are measured on (a folder without splits/ has "
                             "train only)")


def add_model_arg(parser: argparse.ArgumentParser) -> None:
    """``--model``: a built-in network of :mod:`autoloss_ray.models` or ``MODULE:FUNCTION``
    (``autoloss_ray.models.build_model`` builds either)."""
    parser.add_argument("--model", default="tiny",
                        help=f"network: one of {', '.join(sorted(MODELS))} (random init; "
                             "nothing downloads) or your own MODULE:FUNCTION, called as "
                             "FUNCTION(num_classes=C), e.g. smp_model:build")


def add_training_args(parser: argparse.ArgumentParser, *, splits: bool = True,
                      steps_help: str = "optimizer steps") -> None:
    """``--image-size``, ``--train-size``, ``--val-size``, ``--batch-size``, ``--max-steps``,
    ``--lr``, ``--seed``. Without ``splits`` (a training set only, of exactly
    ``--train-size`` images) there is no ``--val-size`` and ``--train-size`` 0 does not mean
    "all"; check it with :func:`parse_checked`'s ``at_least_one``."""
    parser.add_argument("--image-size", type=int, default=64, help="training crop side (px)")
    parser.add_argument("--train-size", type=int, default=64,
                        help="number of training images" + (" (0: all)" if splits else ""))
    if splits:
        parser.add_argument("--val-size", type=int, default=16,
                            help="number of validation images (0: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--max-steps", type=int, default=100, help=steps_help)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")


def parse_checked(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, *,
                  at_least_one: Sequence[str] = AT_LEAST_ONE) -> argparse.Namespace:
    """``parser.parse_args(argv)``, then each flag of ``at_least_one`` (attribute names) must
    be >= 1, or the usage and a one-line error exit with status 2."""
    args = parser.parse_args(argv)
    for name in at_least_one:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def load_loss(spec: str, *, num_classes: int, ignore_index: int) -> SurrogateLoss:
    """``preset:NAME`` (the paper's curves), ``file:PATH`` or ``PATH.json`` (a searched loss)
    -> the loss for ``num_classes`` classes."""
    if spec.startswith("preset:"):
        return SurrogateLoss.from_preset(spec[len("preset:"):], num_classes=num_classes,
                                         ignore_index=ignore_index)
    path = spec[len("file:"):] if spec.startswith("file:") else spec
    if not path.endswith(".json") and not spec.startswith("file:"):
        raise ValueError(f"--loss must be preset:NAME, file:PATH or PATH.json, got {spec!r}")
    if not os.path.isfile(path):
        raise ValueError(f"--loss file {path!r} does not exist")
    return SurrogateLoss.from_file(path, num_classes=num_classes, ignore_index=ignore_index)


def train_val_sets(*, dataset: str, data_root: str | None, val_split: str, image_size: int,
                   train_size: int, val_size: int, seed: int) -> tuple[Split, Split]:
    """The training set (augmented) and the ``val_split`` set (not), each a seeded random
    subset of ``train_size`` / ``val_size`` images (0: all). The synthetic scenes are made
    as many as the larger of the two."""
    extra = {"length": max(train_size, val_size, 1)} if dataset == "synthetic" else {}
    train_set = subset(build_dataset(dataset, root=data_root, split="train",
                                     image_size=image_size, train=True, seed=seed, **extra),
                       train_size, seed=seed)
    val_set = subset(build_dataset(dataset, root=data_root, split=val_split,
                                   image_size=image_size, train=False, seed=seed, **extra),
                     val_size, seed=seed)
    return train_set, val_set


def sets_and_loss(*, loss: str, dataset: str, data_root: str | None, val_split: str,
                  image_size: int, train_size: int, val_size: int,
                  seed: int) -> tuple[Split, Split, SurrogateLoss]:
    """:func:`train_val_sets`, then :func:`load_loss` of ``loss`` for the training set's class
    count and ignore index (a loss file's own class count is replaced)."""
    train_set, val_set = train_val_sets(dataset=dataset, data_root=data_root,
                                        val_split=val_split, image_size=image_size,
                                        train_size=train_size, val_size=val_size, seed=seed)
    loss_fn = load_loss(loss, num_classes=train_set.num_classes,
                        ignore_index=train_set.ignore_index)
    return train_set, val_set, loss_fn


def exact_metrics(acc: MetricAccumulator) -> dict[str, float]:
    """The six metrics of ``autoloss_ray.vocabulary.METRICS`` from ``acc``, as floats."""
    return {k: float(v) for k, v in acc.compute().items() if k in METRICS}


def training_result(*, loss_fn: SurrogateLoss, num_classes: int, losses: Sequence[float],
                    val: dict[str, float]) -> dict:
    """The RESULT of a training run: the loss's metric, the class count, the number of steps,
    the first and last training loss and the validation metrics."""
    return {"loss": loss_fn.metric, "num_classes": num_classes, "steps": len(losses),
            "first_loss": losses[0], "last_loss": losses[-1], "val": val}


def print_result(result: dict) -> None:
    """Print ``RESULT {json}``, the line the tests and a caller read (the last one printed)."""
    print("RESULT " + json.dumps(result), flush=True)


def run_script(main: Callable[[], object]) -> None:
    """Run ``main()``; a bad input (ValueError, TypeError, FileNotFoundError) exits with
    ``error: MESSAGE`` on one line instead of a traceback."""
    try:
        main()
    except (ValueError, TypeError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
