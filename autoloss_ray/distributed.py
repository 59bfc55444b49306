"""Sums across the ranks of a torch.distributed process group (DDP), for losses and metrics.

Two reductions, both over the default process group unless one is given:

- :func:`all_reduce_sum` — differentiable. The forward returns ``S = sum_r S_r`` (each rank
  gives its local sums ``S_r``); the backward hands each rank ``world_size * dL/dS`` for its
  own ``S_r``, without communication. Why: every rank computes the same loss ``L(S)`` from the
  same global sums, so ``dL/dS`` is identical on every rank and the gradient of the
  global-batch loss with respect to rank r's inputs is ``dL/dS * dS_r/dx_r``. DDP then
  *averages* parameter gradients over the ranks, i.e. it divides by ``world_size``; the factor
  ``world_size`` makes DDP's averaged gradient equal to the gradient of the global-batch loss
  (what one process on the whole batch would get), exactly as for a per-rank mean loss. It is
  also the gradient :func:`torch.distributed.nn.functional.all_reduce` gives when every rank
  computes the same loss (its backward all-reduces the incoming gradients, i.e. sums
  ``world_size`` equal copies), one collective cheaper.
  Condition: the sums must enter every rank's loss the same way (the same loss module and
  weight on every rank), which DDP training does.
- :func:`all_reduce_counts` — no gradient: integer or float counts summed in place
  (confusion matrices, class-set counts). A class set derived from summed counts
  (``count > 0``) is the OR of the ranks' class sets.

Nothing here imports ray; torch.distributed must be initialized by the caller (Ray Train's
``TorchTrainer``, ``torchrun``, or ``init_process_group``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["SYNC_MODES", "check_sync", "is_active", "world_size", "all_reduce_sum",
           "all_reduce_counts"]

SYNC_MODES = ("none", "ddp")


def check_sync(sync: Any) -> str:
    """Validate a ``sync`` option: "none" (local statistics) or "ddp" (summed over ranks)."""
    if not isinstance(sync, str) or sync not in SYNC_MODES:
        raise ValueError(f"sync must be one of {', '.join(map(repr, SYNC_MODES))}, got {sync!r}")
    return sync


def _require_group(group) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "sync='ddp' needs an initialized torch.distributed process group (Ray Train's "
            "TorchTrainer, torchrun or torch.distributed.init_process_group sets one up); "
            "none is initialized in this process")


def is_active(group=None) -> bool:
    """True when torch.distributed is initialized (any world size)."""
    return dist.is_available() and dist.is_initialized()


def world_size(group=None) -> int:
    """The number of ranks of ``group`` (default group); 1 when torch.distributed is off."""
    if not is_active(group):
        return 1
    return dist.get_world_size(group)


class _AllReduceSum(torch.autograd.Function):
    """S_r -> sum_r S_r; backward: world_size * grad (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, group):  # noqa: D401
        out = x.detach().clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        ctx.scale = dist.get_world_size(group)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


def all_reduce_sum(x: torch.Tensor, *, group=None) -> torch.Tensor:
    """Differentiable sum of ``x`` (any shape, float) over the ranks of ``group``.

    Returns a new tensor; the backward scales the incoming gradient by the world size (the
    DDP convention explained in the module docstring). Raises RuntimeError when
    torch.distributed is not initialized.
    """
    _require_group(group)
    return _AllReduceSum.apply(x, group)


@torch.no_grad()
def all_reduce_counts(x: torch.Tensor, *, group=None) -> torch.Tensor:
    """Sum ``x`` (counts, any dtype the backend supports) over the ranks, in place; returns x.
    Raises RuntimeError when torch.distributed is not initialized."""
    _require_group(group)
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x
