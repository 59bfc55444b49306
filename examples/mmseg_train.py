"""Train with the searched loss as an mmsegmentation loss (mmengine's ``Runner``).

Reads ``examples/configs/autoseg_loss.py`` with ``mmengine.Config.fromfile``: its
``custom_imports`` imports :mod:`autoloss_ray.integrations.mmseg`, which registers
``type="AutoSegLoss"`` in mmengine's ``MODELS`` registry; ``MODELS.build(cfg.loss_decode)``
builds it exactly as mmseg's decode head does. The script first checks that the built loss
equals the plain :class:`~autoloss_ray.SurrogateLoss` times ``loss_weight`` on one batch, then
trains a small network with it for ``--max-steps`` iterations in mmengine's ``Runner``, the
training loop mmsegmentation runs (the model calls the loss as mmseg's decode head does:
``loss_decode(seg_logits, seg_label, weight=None, ignore_index=255)``).

    pip install 'autoloss-ray[mmseg]'
    python examples/mmseg_train.py --loss file:runs/demo-loss.json --max-steps 200

mmsegmentation itself is not needed (1.2.2 refuses the current mmcv, which does not build
here); in an mmseg config use the same ``custom_imports`` and ``loss_decode`` dict.

The last line printed is ``RESULT {json}``: the registry check and the first and last loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import _common as common  # what the three examples share (examples/_common.py)
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from autoloss_ray import SurrogateLoss
from autoloss_ray.data import build_dataset, subset
from autoloss_ray.models import build_model

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "autoseg_loss.py")


class SegmentorWithLoss(BaseModel):
    """An mmengine model: a network and a loss built from an mmseg-style ``loss_decode``
    config. ``forward(images [N,3,H,W], labels [N,H,W], mode="loss")`` -> ``{loss_name: loss}``
    (the decode head's way: logits resized to the labels, then the loss); mode "tensor" ->
    logits."""

    def __init__(self, *, network: torch.nn.Module, loss_decode: dict,
                 ignore_index: int = 255) -> None:
        super().__init__()
        self.network = network
        self.loss_decode = MODELS.build(loss_decode)
        self.ignore_index = ignore_index
        self.losses: list[float] = []

    def forward(self, images, labels=None, mode: str = "tensor"):
        logits = self.network(images)
        if mode != "loss":
            return logits
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                               align_corners=False)
        loss = self.loss_decode(logits, labels, weight=None, ignore_index=self.ignore_index)
        self.losses.append(float(loss.detach()))
        return {self.loss_decode.loss_name: loss}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.new_parser(__doc__)
    p.add_argument("--config", default=CONFIG,
                   help="mmengine config with custom_imports and a loss_decode dict")
    p.add_argument("--loss", default=None,
                   help="replace the config's curves: preset:NAME or file:PATH (a loss written "
                        "by autoloss search --export / autoloss export)")
    p.add_argument("--loss-weight", type=float, default=None,
                   help="replace the config's loss_weight")
    common.add_model_arg(p)
    common.add_training_args(p, splits=False, steps_help="training iterations")
    p.add_argument("--work-dir", default=None,
                   help="mmengine's work_dir (logs); default: a temporary folder")
    return common.parse_checked(p, argv, at_least_one=(*common.AT_LEAST_ONE, "train_size"))


def loss_config(cfg: Config, args: argparse.Namespace) -> dict:
    """The config's ``loss_decode`` dict with ``--loss`` / ``--loss-weight`` applied."""
    loss = dict(cfg.loss_decode)
    if args.loss is not None:
        for key in ("preset", "loss_file", "theta", "metric"):
            loss.pop(key, None)
        if args.loss.startswith("preset:"):
            loss["preset"] = args.loss[len("preset:"):]
        elif args.loss.startswith("file:"):
            loss["loss_file"] = args.loss[len("file:"):]
        else:
            raise ValueError(f"--loss must be preset:NAME or file:PATH, got {args.loss!r}")
    if args.loss_weight is not None:
        loss["loss_weight"] = args.loss_weight
    return loss


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, os.getcwd())  # a --model MODULE of the working folder
    cfg = Config.fromfile(args.config)  # runs custom_imports: registers AutoSegLoss
    torch.manual_seed(args.seed)
    data = build_dataset("synthetic", split="train", image_size=args.image_size, train=False,
                         seed=args.seed, length=args.train_size)
    data = subset(data, args.train_size, seed=args.seed)
    loss_cfg = loss_config(cfg, args)
    loss_cfg["num_classes"] = data.num_classes

    # 1. the registry builds the plain SurrogateLoss times loss_weight
    built = MODELS.build(loss_cfg)
    C = data.num_classes
    if "loss_file" in loss_cfg:  # the same loss built without the registry
        reference = SurrogateLoss.from_file(loss_cfg["loss_file"], num_classes=C)
    elif "preset" in loss_cfg:
        reference = SurrogateLoss.from_preset(loss_cfg["preset"], num_classes=C)
    else:
        reference = SurrogateLoss(loss_cfg["metric"], num_classes=C, theta=loss_cfg.get("theta"),
                                  parameterization=loss_cfg.get("parameterization", "bezier"))
    images, labels = next(iter(DataLoader(data, batch_size=args.batch_size)))
    logits = torch.randn(labels.shape[0], data.num_classes, *labels.shape[-2:],
                         generator=torch.Generator().manual_seed(args.seed))
    via_registry = float(built(logits, labels, weight=None, ignore_index=data.ignore_index))
    direct = float(built.loss_weight * reference(logits, labels))

    # 2. train with it in mmengine's Runner
    model = SegmentorWithLoss(network=build_model(args.model, num_classes=data.num_classes),
                              loss_decode=loss_cfg, ignore_index=data.ignore_index)
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(
            model=model,
            work_dir=args.work_dir or tmp,
            train_dataloader=dict(dataset=data, batch_size=args.batch_size, num_workers=0,
                                  sampler=dict(type="InfiniteSampler", shuffle=True,
                                               seed=args.seed),
                                  collate_fn=dict(type="default_collate")),
            train_cfg=dict(by_epoch=False, max_iters=args.max_steps),
            optim_wrapper=dict(optimizer=dict(type="Adam", lr=args.lr)),
            default_hooks=dict(logger=dict(type="LoggerHook", interval=max(1, args.max_steps // 5)),
                               checkpoint=None),
            randomness=dict(seed=args.seed),
            log_level="WARNING",
        )
        runner.train()
    result = {"loss_name": built.loss_name, "loss_weight": built.loss_weight,
              "metric": built.loss.metric, "registry_loss": via_registry,
              "direct_loss": direct, "steps": len(model.losses),
              "first_loss": model.losses[0], "last_loss": model.losses[-1]}
    common.print_result(result)
    return result


if __name__ == "__main__":
    common.run_script(main)
