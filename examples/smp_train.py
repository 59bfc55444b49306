"""Train a segmentation_models.pytorch U-Net with a searched loss (a plain PyTorch loop).

The network is :func:`smp_model.build` (``smp.Unet``, ResNet-18 encoder, random init; the
same module ``autoloss search --model smp_model:build`` searches a loss for). The loss is
autoloss-ray's :class:`~autoloss_ray.SurrogateLoss` from ``--loss file:PATH`` (written by
``autoloss search --export`` / ``autoloss export``) or ``--loss preset:NAME``. The test set's
exact metrics come from :class:`~autoloss_ray.MetricAccumulator`.

    pip install 'autoloss-ray[smp]'
    python examples/smp_train.py --loss file:runs/demo-loss.json --max-steps 200

The last line printed is ``RESULT {json}``: the first and last training loss and the
validation metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # smp_model beside this file

import smp_model  # noqa: E402

from autoloss_ray import MetricAccumulator, SurrogateLoss  # noqa: E402
from autoloss_ray.data import DATASETS, build_dataset, subset  # noqa: E402
from autoloss_ray.vocabulary import METRICS  # noqa: E402


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--loss", default="preset:miou",
                   help="the loss: preset:NAME (the paper's curves), file:PATH or PATH.json "
                        "(a loss written by autoloss search --export / autoloss export)")
    p.add_argument("--dataset", default="synthetic", choices=sorted(DATASETS),
                   help="a dataset of autoloss_ray.data (folder: your own, see "
                        "docs/own-task.md)")
    p.add_argument("--data-root", default=None, help="the dataset's folder (not for synthetic)")
    p.add_argument("--val-split", default="val",
                   help="split the metrics are measured on (a folder without splits/ has "
                        "train only)")
    p.add_argument("--encoder", default="resnet18",
                   help="smp encoder name (random init; nothing downloads)")
    p.add_argument("--image-size", type=int, default=64, help="training crop side (px)")
    p.add_argument("--train-size", type=int, default=64,
                   help="number of training images (0: all)")
    p.add_argument("--val-size", type=int, default=16,
                   help="number of validation images (0: all)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch")
    p.add_argument("--max-steps", type=int, default=100, help="optimizer steps")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    args = p.parse_args(argv)
    for name in ("image_size", "batch_size", "max_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    extra = {"length": max(args.train_size, args.val_size, 1)} if args.dataset == "synthetic" \
        else {}
    train_set = subset(build_dataset(args.dataset, root=args.data_root, split="train",
                                     image_size=args.image_size, train=True, seed=args.seed,
                                     **extra), args.train_size, seed=args.seed)
    val_set = subset(build_dataset(args.dataset, root=args.data_root, split=args.val_split,
                                   image_size=args.image_size, train=False, seed=args.seed,
                                   **extra), args.val_size, seed=args.seed)
    num_classes, ignore_index = train_set.num_classes, train_set.ignore_index
    loss_fn = load_loss(args.loss, num_classes=num_classes, ignore_index=ignore_index)
    model = smp_model.build(num_classes, encoder_name=args.encoder).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed),
                        drop_last=len(train_set) >= args.batch_size)
    losses: list[float] = []
    model.train()
    while len(losses) < args.max_steps:
        for images, labels in loader:
            loss = loss_fn(model(images.to(device)), labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) == args.max_steps:
                break
    model.eval()
    acc = MetricAccumulator(num_classes, ignore_index=ignore_index)
    with torch.no_grad():
        for images, labels in DataLoader(val_set, batch_size=args.batch_size):
            acc.update(model(images.to(device)).argmax(1), labels.to(device))
    val = {k: float(v) for k, v in acc.compute().items() if k in METRICS}
    result = {"loss": loss_fn.metric, "num_classes": num_classes, "steps": len(losses),
              "first_loss": losses[0], "last_loss": losses[-1], "val": val}
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
