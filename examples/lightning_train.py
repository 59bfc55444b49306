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
import os
import sys

import _common as common  # what the three examples share (examples/_common.py)
import lightning as L
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from autoloss_ray import MetricAccumulator
from autoloss_ray.models import build_model


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
        self.val_metrics = common.exact_metrics(self.metrics)
        self.log_dict({f"val_{k}": v for k, v in self.val_metrics.items()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.new_parser(__doc__)
    common.add_loss_and_data_args(p)
    common.add_model_arg(p)
    common.add_training_args(p)
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    return common.parse_checked(p, argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, os.getcwd())  # a --model MODULE of the working folder
    L.seed_everything(args.seed, verbose=False)
    train_set, val_set, loss_fn = common.sets_and_loss(
        loss=args.loss, dataset=args.dataset, data_root=args.data_root, val_split=args.val_split,
        image_size=args.image_size, train_size=args.train_size, val_size=args.val_size,
        seed=args.seed)
    num_classes, ignore_index = train_set.num_classes, train_set.ignore_index
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
    result = common.training_result(loss_fn=loss_fn, num_classes=num_classes,
                                    losses=module.train_losses, val=module.val_metrics)
    common.print_result(result)
    return result


if __name__ == "__main__":
    common.run_script(main)
