"""The user's own model and dataset, named ``MODULE:FUNCTION`` (``--model``, ``--dataset``).

A name with a ``:`` is a plugin, any other name a built-in one (``models.MODELS``,
``data.DATASETS``). The name travels through the trial config as that string and is resolved
where it is used (on the Ray worker) by :func:`build_plugin_model` and
:class:`autoloss_ray.data.plugin.PluginDataset`; the application checks it once before Ray
starts with :func:`check_model` and :func:`check_dataset` (import, call, probe), so every
mistake is one sentence.

The model function is called as ``FUNCTION(num_classes=C)`` and returns an ``nn.Module``
whose forward maps images ``[N, 3, H, W]`` to logits ``[N, C, h, w]`` (or a dict with
``"out"``, like torchvision's segmentation models); :class:`PluginModel` takes ``"out"`` and
upsamples logits of another resolution bilinearly to ``H x W``. The dataset function is
described in :mod:`autoloss_ray.data.plugin`.

Every function here is pure except for the import itself (``importlib``); none imports Ray.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["is_plugin", "parse_spec", "load_callable", "call_plugin", "PluginModel",
           "build_plugin_model", "check_model", "check_dataset", "one_line"]

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def one_line(text: Any, limit: int = 400) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, cut at
    ``limit`` characters."""
    out = " ".join(str(text).split())
    return out if len(out) <= limit else out[: limit - 3] + "..."


def is_plugin(name: Any) -> bool:
    """Whether a model or dataset name is a ``MODULE:FUNCTION`` plugin (it holds a ``:``)."""
    return isinstance(name, str) and ":" in name


def parse_spec(spec: str, what: str = "model") -> tuple[str, str]:
    """``"pkg.module:function"`` -> ``("pkg.module", "function")``; ``what`` ("model" or
    "dataset") names the option in the error. The function part may be dotted
    (``module:Class.build``). ValueError (one sentence) for anything else."""
    if not isinstance(spec, str):
        raise TypeError(f"--{what} must be a string MODULE:FUNCTION, got {type(spec).__name__}")
    if spec.count(":") != 1:
        raise ValueError(f"--{what} {spec!r} is not MODULE:FUNCTION (exactly one ':', e.g. "
                         f"mymodels:build)")
    module, function = (part.strip() for part in spec.split(":"))
    if not module or not function:
        raise ValueError(f"--{what} {spec!r} has an empty "
                         f"{'module' if not module else 'function'} part; expected "
                         "MODULE:FUNCTION, e.g. mymodels:build")
    for part, kind in ((module, "module"), (function, "function")):
        if not _DOTTED.match(part):
            raise ValueError(f"--{what} {spec!r}: {kind} {part!r} is not a dotted Python name")
    return module, function


def load_callable(spec: str, what: str = "model") -> Callable[..., Any]:
    """Import ``MODULE`` and return its ``FUNCTION`` (``getattr`` along the dots).

    The module is found on ``sys.path`` (the CLI puts the working folder first, as
    ``python -m`` does; a Ray worker runs in the shipped working folder). ValueError with one
    sentence for a missing module, an import that raises, a missing attribute; TypeError when
    the attribute is not callable."""
    module_name, function = parse_spec(spec, what)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and (
                exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise ValueError(
                f"--{what} {spec!r}: no module named {module_name!r} (put {module_name}.py in "
                "the working folder or install its package)") from None
        raise ValueError(f"--{what} {spec!r}: importing {module_name!r} failed: "
                         f"{one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise ValueError(f"--{what} {spec!r}: importing {module_name!r} raised "
                         f"{type(exc).__name__}: {one_line(exc)}") from None
    obj: Any = module
    for attr in function.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            where = getattr(module, "__file__", None) or module_name
            raise ValueError(f"--{what} {spec!r}: module {module_name!r} ({where}) has no "
                             f"{function!r}") from None
    if not callable(obj):
        raise TypeError(f"--{what} {spec!r}: {function!r} is a {type(obj).__name__}, not a "
                        "function")
    return obj


def call_plugin(spec: str, what: str, **kwargs: Any) -> Any:
    """``FUNCTION(**kwargs)`` of ``spec``; an exception it raises becomes a ValueError of one
    line naming the spec, the exception's type and message."""
    fn = load_callable(spec, what)
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code: report it in one line
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"--{what} {spec!r}: {fn.__name__}({args}) raised "
                         f"{type(exc).__name__}: {one_line(exc)}") from None


class PluginModel(nn.Module):
    """A user's segmentation network as the training loop expects it.

    forward: images ``[N, 3, H, W]`` -> logits ``[N, C, H, W]``: a dict output gives its
    ``"out"``; logits at another resolution are upsampled (bilinear,
    ``align_corners=False``) to ``H x W``. ``backbone`` is the network's own ``backbone``
    when it has one (two learning-rate groups, see :func:`autoloss_ray.models.param_groups`);
    without it the model has no ``backbone`` attribute and trains as one group at ``lr``.
    The weights live under ``net.`` in the state dict.
    """

    def __init__(self, net: nn.Module, *, spec: str = "") -> None:
        super().__init__()
        self.net = net
        self.spec = spec

    def __getattr__(self, name: str) -> Any:
        if name == "backbone":
            net = super().__getattr__("net")
            backbone = getattr(net, "backbone", None)
            if isinstance(backbone, nn.Module):
                return backbone
            raise AttributeError(f"model {self.spec!r} has no backbone")
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"]
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def build_plugin_model(spec: str, *, num_classes: int) -> PluginModel:
    """``FUNCTION(num_classes=C)`` of ``spec``, checked to be an ``nn.Module`` and wrapped in
    :class:`PluginModel` (TypeError otherwise). No forward pass (see :func:`check_model`)."""
    net = call_plugin(spec, "model", num_classes=int(num_classes))
    if not isinstance(net, nn.Module):
        raise TypeError(f"--model {spec!r} returned a {type(net).__name__}; expected a "
                        "torch.nn.Module")
    return PluginModel(net, spec=spec)


def check_model(spec: str, *, num_classes: int,
                image_size: tuple[int, int] = (64, 64)) -> PluginModel:
    """Build ``spec`` and run one forward pass on a probe batch ``[2, 3, h, w]`` (eval mode,
    no gradients): the output must be a float tensor (or a dict with a tensor ``"out"``) of
    shape ``[2, num_classes, h', w']``. Returns the wrapped model; ValueError/TypeError of one
    sentence naming what came back."""
    model = build_plugin_model(spec, num_classes=num_classes)
    h, w = image_size
    probe = torch.zeros(2, 3, int(h), int(w))
    model.eval()
    try:
        with torch.no_grad():
            out = model.net(probe)
    except Exception as exc:  # noqa: BLE001 - the user's forward
        raise ValueError(f"--model {spec!r}: its forward on a probe batch [2, 3, {h}, {w}] "
                         f"raised {type(exc).__name__}: {one_line(exc)}") from None
    if isinstance(out, dict):
        if "out" not in out:
            raise ValueError(f"--model {spec!r}: its forward returned a dict without 'out' "
                             f"(keys {sorted(map(str, out))}); expected logits [N, C, h, w] "
                             "or a dict with 'out'")
        out = out["out"]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"--model {spec!r}: its forward returned a {type(out).__name__}; "
                        "expected a logits tensor [N, C, h, w] or a dict with 'out'")
    if out.ndim != 4 or out.shape[0] != 2 or out.shape[1] != num_classes:
        raise ValueError(f"--model {spec!r}: its forward on [2, 3, {h}, {w}] returned shape "
                         f"{list(out.shape)}; expected [2, {num_classes}, h, w] (logits of "
                         f"{num_classes} classes)")
    if not out.is_floating_point():
        raise TypeError(f"--model {spec!r}: its forward returned {out.dtype} logits; expected "
                        "a float tensor")
    model.train()
    return model


def check_dataset(spec: str, *, splits: list[str | None], root: str | None = None,
                  image_size: int | tuple[int, int] = 64, seed: int = 0,
                  num_classes: int | None = None, options: dict[str, Any] | None = None,
                  sample: int = 2) -> dict[str, Any]:
    """Build dataset plugin ``spec`` for every split in ``splits`` (training and evaluation
    copies) and read ``sample`` items of each (first and last): their types, shapes, dtypes
    and label values are checked (:class:`~autoloss_ray.data.plugin.PluginDataset`).
    Returns ``{"num_classes", "ignore_index", "sizes": {split: len}}``."""
    from autoloss_ray.data.plugin import PluginDataset

    sizes: dict[str, int] = {}
    found: dict[str, Any] = {}
    for split in dict.fromkeys(s for s in splits if s is not None):
        for train in (True, False):
            ds = PluginDataset(spec, split=split, train=train, seed=seed, image_size=image_size,
                               root=root, num_classes=num_classes, **dict(options or {}))
            n = len(ds)
            if n == 0:
                raise ValueError(f"--dataset {spec!r} split {split!r} holds no items")
            for i in sorted({0, n - 1})[: max(1, int(sample))]:
                ds.get(i, augment=train)
            sizes[split] = n
            found = {"num_classes": ds.num_classes, "ignore_index": ds.ignore_index}
    return {**found, "sizes": sizes}
