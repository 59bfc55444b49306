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
import os
import sys

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # smp_model, _common beside it

import _common as common  # noqa: E402  what the three examples share (examples/_common.py)
import smp_model  # noqa: E402

from autoloss_ray import MetricAccumulator  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.new_parser(__doc__)
    common.add_loss_and_data_args(p)
    p.add_argument("--encoder", default="resnet18",
                   help="smp encoder name (random init; nothing downloads)")
    common.add_training_args(p)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    return common.parse_checked(p, argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_set, val_set, loss_fn = common.sets_and_loss(
        loss=args.loss, dataset=args.dataset, data_root=args.data_root, val_split=args.val_split,
        image_size=args.image_size, train_size=args.train_size, val_size=args.val_size,
        seed=args.seed)
    num_classes, ignore_index = train_set.num_classes, train_set.ignore_index
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
    result = common.training_result(loss_fn=loss_fn, num_classes=num_classes, losses=losses,
                                    val=common.exact_metrics(acc))
    common.print_result(result)
    return result


if __name__ == "__main__":
    common.run_script(main)
