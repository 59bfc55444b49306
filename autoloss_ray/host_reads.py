"""The operations that make the host wait for a CUDA device ("host reads"), counted on any
device (issue 17: no host synchronisation inside the proxy trial's training loop).

On CUDA ``torch.cuda.set_sync_debug_mode("warn")`` names each synchronisation as it happens;
:class:`HostReads` finds the same operations in the operator stream, so that a CPU run (CI,
``bench/sync_check.py --device cpu``) sees them too. It records each aten operator whose
result the host needs before it can go on:

* a tensor read as a Python number or truth value (``t.item()``, ``int(t)``, ``bool(t)``,
  ``if t:``): ``aten._local_scalar_dense``;
* an output whose size depends on the values: ``nonzero``, ``masked_select``, boolean-mask
  indexing (``x[mask]``), ``unique``, ``repeat_interleave`` without ``output_size``,
  ``bincount``, ``histc``, and ``equal`` / ``is_nonzero``;
* a copy from a device to the host (``.cpu()``, ``.to("cpu")`` of a CUDA tensor).

Blind spot: ``.tolist()``, ``.numpy()`` and ``.cpu()`` of a tensor that is already on the CPU
dispatch no operator, so a CPU run does not see them (on CUDA they are copies to the host and
are seen).

    with HostReads() as reads:
        loss(logits, target).backward()
    reads.sites  # Counter: (operator, file, line, function) -> count
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostReads", "READ_OPS"]

#: aten operators (overload packets) that need the device's result on the host
READ_OPS = frozenset({
    "_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
    "unique_consecutive", "unique_dim_consecutive", "repeat_interleave", "bincount", "histc",
    "equal", "is_nonzero",
})


def _reads_host(name: str, args: tuple, kwargs: dict) -> bool:
    if name in READ_OPS:
        if name == "repeat_interleave":  # with output_size the size is known
            return kwargs.get("output_size") is None
        return True
    if name in ("index", "_unsafe_index"):  # x[mask]: the output size is the mask's count
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                   for i in (args[1] if len(args) > 1 else ()) if i is not None)
    if name == "_to_copy":
        src, device = args[0], kwargs.get("device")
        return (isinstance(src, torch.Tensor) and src.device.type != "cpu"
                and device is not None and torch.device(device).type == "cpu")
    if name == "copy_":
        dst, src = args[0], args[1]
        return (isinstance(src, torch.Tensor) and src.device.type != "cpu"
                and dst.device.type == "cpu")
    return False


class HostReads(TorchDispatchMode):
    """A dispatch mode that counts host reads by call site while it is active.

    ``within`` (optional): a predicate on the read's ``traceback.StackSummary``; only reads
    it accepts are counted in ``sites`` (e.g. those made inside a training loop).
    ``sites``: Counter of (operator, file, line, function) -> count, the site being the
    innermost frame of this project's code (``autoloss_ray``, ``trainables``, ``searchers``),
    else the innermost frame outside torch. ``total``: all reads, accepted or not.
    """

    PROJECT = ("autoloss_ray", "trainables", "searchers")

    def __init__(self, within: Callable[[traceback.StackSummary], bool] | None = None) -> None:
        super().__init__()
        self.within = within
        self.sites: collections.Counter = collections.Counter()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if _reads_host(name, args, kwargs):
            self.total += 1
            stack = traceback.extract_stack()[:-1]
            if self.within is None or self.within(stack):
                frame = self._site(stack)
                self.sites[(name, frame.filename, frame.lineno, frame.name)] += 1
        return func(*args, **kwargs)

    def _site(self, stack: traceback.StackSummary) -> Any:
        own = [f for f in stack if f.filename != __file__
               and any(f"/{p}/" in f.filename for p in self.PROJECT)]
        if own:
            return own[-1]
        outside = [f for f in stack if "/torch/" not in f.filename and f.filename != __file__]
        return outside[-1] if outside else stack[-1]

    def by_function(self) -> collections.Counter:
        """Counter: function name -> reads."""
        out: collections.Counter = collections.Counter()
        for (_, _, _, function), n in self.sites.items():
            out[function] += n
        return out
