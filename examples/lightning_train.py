"""Train a segmentation network with a searched loss in PyTorch Lightning.

The loss is autoloss-ray's :class:`~autoloss_ray.SurrogateLoss`, from a file written by
``autoloss search --export`` / ``autoloss export`` (``--loss file:runs/my-loss.json``) or one of
the paper's presets (``--loss preset:miou``, the default). The data is one of the project's
datasets (the built-in synthetic scenes by default; ``--dataset camvid --data-root DIR``).
Validation reports the exact metrics (:class:`~autoloss_ray.MetricAccumulator`).

    pip install 'autoloss-ray[lightning]'
    python examples/lightning_train.py --loss file:runs/demo-loss.json --max-steps 200

The last line printed is ``RESULT {json}``: the first and last training loss and the
validation metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import lightning as L
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from autoloss_ray import MetricAccumulator, SurrogateLoss
from autoloss_ray.data import DATASETS, build_dataset, subset
from autoloss_ray.models import MODELS, build_model
from autoloss_ray.vocabulary import METRICS


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


class SegmentationModule(L.LightningModule):
    """A LightningModule trained with a metric surrogate; validation logs the exact metrics.

    model: images [N, 3, H, W] -> logits [N, C, h, w] (or a dict with "out");
    loss_fn: (logits, labels [N, H, W]) -> scalar, e.g. a SurrogateLoss.
    """

    def __init__(self, *, model: nn.Module, loss_fn: nn.Module, num_classes: int,
                 ignore_index: int = 255, lr: float = 1e-3) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.lr = lr
        self.metrics = MetricAccumulator(num_classes, ignore_index=ignore_index)
        self.train_losses: list[float] = []
        self.val_metrics: dict[str, float] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        return out["out"] if isinstance(out, dict) else out

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.loss_fn(self(images), labels)
        self.train_losses.append(float(loss.detach()))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.metrics.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = nn.functional.interpolate(logits, size=labels.shape[-2:],
                                               mode="bilinear", align_corners=False)
        self.metrics.update(logits.argmax(1), labels)

    def on_validation_epoch_end(self) -> None:
        self.val_metrics = {k: float(v) for k, v in self.metrics.compute().items()
                            if k in METRICS}
        self.log_dict({f"val_{k}": v for k, v in self.val_metrics.items()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


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
    p.add_argument("--model", default="tiny",
                   help=f"network: one of {', '.join(sorted(MODELS))} (random init; nothing "
                        "downloads) or your own MODULE:FUNCTION, called as "
                        "FUNCTION(num_classes=C), e.g. smp_model:build")
    p.add_argument("--image-size", type=int, default=64, help="training crop side (px)")
    p.add_argument("--train-size", type=int, default=64,
                   help="number of training images (0: all)")
    p.add_argument("--val-size", type=int, default=16,
                   help="number of validation images (0: all)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch")
    p.add_argument("--max-steps", type=int, default=100, help="optimizer steps")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    args = p.parse_args(argv)
    for name in ("image_size", "batch_size", "max_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, os.getcwd())  # a --model MODULE of the working folder
    L.seed_everything(args.seed, verbose=False)
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
    module = SegmentationModule(model=build_model(args.model, num_classes=num_classes),
                                loss_fn=loss_fn, num_classes=num_classes,
                                ignore_index=ignore_index, lr=args.lr)
    trainer = L.Trainer(max_steps=args.max_steps, accelerator=args.accelerator, devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    g = torch.Generator().manual_seed(args.seed)
    trainer.fit(module, DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                   generator=g, drop_last=len(train_set) >= args.batch_size))
    trainer.validate(module, DataLoader(val_set, batch_size=args.batch_size), verbose=False)
    result = {"loss": loss_fn.metric, "num_classes": num_classes,
              "steps": len(module.train_losses),
              "first_loss": module.train_losses[0], "last_loss": module.train_losses[-1],
              "val": module.val_metrics}
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
