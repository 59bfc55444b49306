"""Proxy and retrain networks, built offline (torchvision builders with ``weights=None``).

Every model returns the logits tensor ``[N, C, H, W]`` at the input's resolution (never a
dict; a user's ``MODULE:FUNCTION`` model is wrapped so, :mod:`autoloss_ray.plugins`) and
exposes ``backbone`` (pretrainable feature extractor) and the rest (the head) so
that :func:`param_groups` can give the head a larger learning rate (the paper: x10).
Pretrained backbone weights come from a local file, never from a download.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODELS", "build_model", "param_groups", "load_backbone_weights", "TinySegNet"]


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinySegNet(nn.Module):
    """A few conv layers (stride 4, dilated context, a full-resolution skip): fast on CPU.

    x [N, 3, H, W] -> logits [N, C, H, W].
    """

    def __init__(self, num_classes: int, width: int = 24) -> None:
        super().__init__()
        w = width
        self.backbone = nn.ModuleDict(
            {
                "stem": _cbr(3, w),
                "down1": _cbr(w, 2 * w, stride=2),
                "down2": _cbr(2 * w, 2 * w, stride=2),
                "context": nn.Sequential(_cbr(2 * w, 2 * w, dilation=2), _cbr(2 * w, 2 * w, dilation=4)),
            }
        )
        self.classifier = nn.ModuleDict(
            {
                "fuse": _cbr(2 * w + w, w),
                "out": nn.Conv2d(w, num_classes, 1),
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        skip = b["stem"](x)
        y = b["context"](b["down2"](b["down1"](skip)))
        y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = self.classifier["fuse"](torch.cat([y, skip], dim=1))
        return self.classifier["out"](y)


class TorchvisionSeg(nn.Module):
    """Wraps a torchvision segmentation model so that forward returns ``out`` only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def _tv(builder_name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from torchvision.models import segmentation

        builder = getattr(segmentation, builder_name)
        kwargs = dict(weights=None, weights_backbone=None, num_classes=num_classes)
        if builder_name != "lraspp_mobilenet_v3_large":
            kwargs["aux_loss"] = False
        return TorchvisionSeg(builder(**kwargs))

    return build


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "tiny": lambda num_classes: TinySegNet(num_classes),
    "lraspp_mobilenet_v3_large": _tv("lraspp_mobilenet_v3_large"),
    "deeplabv3_resnet50": _tv("deeplabv3_resnet50"),
    "deeplabv3_resnet101": _tv("deeplabv3_resnet101"),
    "fcn_resnet50": _tv("fcn_resnet50"),
}


def build_model(
    name: str, *, num_classes: int, backbone_weights: str | Path | None = None
) -> nn.Module:
    """Model ``name`` (one of ``MODELS``, or a user's ``MODULE:FUNCTION`` wrapped in
    :class:`autoloss_ray.plugins.PluginModel`) with random init, optionally loading the
    backbone from a local state-dict file (see :func:`load_backbone_weights`)."""
    if ":" in str(name):
        from autoloss_ray.plugins import build_plugin_model

        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        model = build_plugin_model(name, num_classes=num_classes)
        if backbone_weights is not None:
            load_backbone_weights(model, backbone_weights)
        return model
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    model = MODELS[name](num_classes)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


_PREFIXES = ("module.", "net.", "backbone.", "features.", "model.")


def load_backbone_weights(model: nn.Module, path: str | Path) -> int:
    """Load backbone weights from ``path`` (a ``torch.save``d state dict, or a dict with a
    ``state_dict``/``model`` entry). Keys may carry the prefixes of a classification
    checkpoint (``features.`` for MobileNet, none for ResNet) or of a segmentation checkpoint
    (``backbone.``); extra keys (``fc.*``, heads) are ignored. Every backbone tensor must be
    present with the right shape, else ValueError. Returns the number of tensors loaded.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"backbone weights {path} is a directory; give the weights "
                                "file (a torch.save'd state dict)")
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"cannot read backbone weights {path} as a torch state dict: {exc}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone weights {path} are not a state dict of tensors")
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError(f"backbone weights {path}: the model has no 'backbone' to load them "
                         "into")
    expected = backbone.state_dict()
    found: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        while True:
            if k in expected:
                found.setdefault(k, value)
                break
            for p in _PREFIXES:
                if k.startswith(p):
                    k = k[len(p):]
                    break
            else:
                break
    missing = [k for k in expected if k not in found]
    wrong = [
        f"{k} {tuple(found[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    if missing or wrong:
        raise ValueError(
            f"backbone weights {path} do not match the model's backbone: "
            f"{len(missing)} of {len(expected)} tensors missing (e.g. {missing[:3]}), "
            f"{len(wrong)} with the wrong shape (e.g. {wrong[:3]})"
        )
    backbone.load_state_dict(found, strict=True)
    return len(found)


def param_groups(model: nn.Module, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
    """Two SGD parameter groups: backbone at ``lr``, everything else at ``lr * head_lr_mult``.

    Each group carries ``initial_lr`` (used by the poly schedule) and ``name``. A model
    without a ``backbone`` attribute (a user's ``--model MODULE:FUNCTION`` network that has
    none) gets one group, ``"all"``, at ``lr``.
    """
    backbone_module = getattr(model, "backbone", None)
    if backbone_module is None:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "initial_lr": lr, "name": "all"}]
    backbone_ids = {id(p) for p in backbone_module.parameters()}
    backbone = [p for p in model.parameters() if id(p) in backbone_ids and p.requires_grad]
    head = [p for p in model.parameters() if id(p) not in backbone_ids and p.requires_grad]
    groups = [
        {"params": backbone, "lr": lr, "initial_lr": lr, "name": "backbone"},
        {"params": head, "lr": lr * head_lr_mult, "initial_lr": lr * head_lr_mult, "name": "head"},
    ]
    return [g for g in groups if g["params"]]
