"""Synchronized surrogate statistics and distributed metric accumulation, on 2 Gloo processes.

One spawn of 2 CPU processes runs every case (the process start dominates the time): each rank
takes a part of a batch, and its results are compared with one process on the whole batch
(computed by each rank itself, without collectives):

- ``SurrogateLoss(sync="ddp")``: loss value = the single-process loss (1e-6); the gradient of
  each rank's logits = world_size x its slice of the single-process gradient (1e-5) — the
  convention that makes DDP's averaged gradient the global-batch gradient (also checked
  through a real DistributedDataParallel model), for every metric, sum of metrics and
  parameterization, native kernels and eager path.
- ``MetricAccumulator.reduced()`` / ``compute(sync=True)``: exactly the single-process integer
  counts and metrics, also with a rank that saw no image.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from autoloss_ray import native
from autoloss_ray.distributed import all_reduce_sum, world_size
from autoloss_ray.losses import SurrogateLoss, search_space
from autoloss_ray.losses.parameterizations import PARAMETERIZATIONS
from autoloss_ray.metrics import METRICS, MetricAccumulator, evaluate

C = 5
WORLD = 2
SPECS = (*METRICS, "miou+biou", "miou+bf1+gacc")
# rank r takes images SPLIT[r]:SPLIT[r+1] of the batch (unequal parts on purpose)
SPLIT = (0, 1, 3)


def _batch(seed: int, n: int = 3, h: int = 20, w: int = 18):
    """Blocky targets with ignored pixels, and logits near them (so the class sets and the
    boundaries are non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, C, (n, h // 4 + 1, w // 4 + 1), generator=g)
    t = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :h, :w].clone()
    t[t == 3] = 1  # a class absent from the target
    t[:, :3, :4] = 255
    base = F.one_hot(torch.where(t == 255, 0, t), C).permute(0, 3, 1, 2).float()
    z = 2.0 * base + torch.randn((n, C, h, w), generator=g)
    return z, t


def _theta(space, rng):
    low = np.maximum(space.low, -3)
    high = np.minimum(space.high, 3)
    return rng.uniform(low, high)


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _check_losses(rank: int, out: list[str], counts: dict) -> None:
    lo, hi = SPLIT[rank], SPLIT[rank + 1]
    rng = np.random.default_rng(7)
    flag = os.environ.get("AUTOLOSS_RAY_NATIVE")
    for path in ("native", "eager"):
        if path == "native" and not native.available():
            # a note, not a failure: the parent then expects the eager cases only
            why = native.unavailable_reason() or "disabled by AUTOLOSS_RAY_NATIVE"
            counts["skipped"] = f"native kernels unavailable: {why}"
            continue
        os.environ["AUTOLOSS_RAY_NATIVE"] = "1" if path == "native" else "0"
        for spec in SPECS:
            for par in PARAMETERIZATIONS:
                theta = _theta(search_space(spec, par), rng)
                z, t = _batch(counts.get("n", 0))
                ref_loss = SurrogateLoss(spec, num_classes=C, parameterization=par, theta=theta)
                zf = z.clone().requires_grad_(True)
                lf = ref_loss(zf, t)
                lf.backward()
                loss = SurrogateLoss(spec, num_classes=C, parameterization=par, theta=theta,
                                     sync="ddp")
                zl = z[lo:hi].clone().requires_grad_(True)
                ll = loss(zl, t[lo:hi])
                ll.backward()
                case = f"{path}/{spec}/{par}"
                dl = abs(float(ll) - float(lf))
                dg = _close(zl.grad / WORLD, zf.grad[lo:hi])
                # absolute (the 1e-5) and relative to the gradient's scale (pixel
                # gradients of a mean over pixels are small)
                gmax = float(zf.grad.abs().max())
                counts["rel"] = max(counts.get("rel", 0.0), dg / max(gmax, 1e-30))
                if not (dl <= 1e-6 and dg <= 1e-5 and dg <= 1e-4 * gmax):
                    out.append(f"rank {rank} {case}: |dloss|={dl:.3g} |dgrad|={dg:.3g} "
                               f"(loss {float(ll)} vs {float(lf)})")
                if gmax == 0.0:
                    out.append(f"{case}: zero reference gradient (the case tests nothing)")
                counts[case] = 1
                counts["n"] = counts.get("n", 0) + 1
    _restore_native_flag(flag)


def _restore_native_flag(flag: str | None) -> None:
    if flag is None:
        os.environ.pop("AUTOLOSS_RAY_NATIVE", None)
    else:
        os.environ["AUTOLOSS_RAY_NATIVE"] = flag


def _check_ddp_model(rank: int, out: list[str]) -> None:
    """Through DistributedDataParallel: the averaged parameter gradients of the synchronized
    loss equal one process's gradients on the whole batch."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    lo, hi = SPLIT[rank], SPLIT[rank + 1]
    flag = os.environ.get("AUTOLOSS_RAY_NATIVE")
    for path in ("native", "eager") if native.available() else ("eager",):
        os.environ["AUTOLOSS_RAY_NATIVE"] = "1" if path == "native" else "0"
        torch.manual_seed(3)
        ref = nn.Conv2d(3, C, 3, padding=1)
        model = DDP(nn.Conv2d(3, C, 3, padding=1))
        model.module.load_state_dict(ref.state_dict())
        g = torch.Generator().manual_seed(11)
        x = torch.randn((3, 3, 20, 18), generator=g)
        _, t = _batch(5)
        spec = "miou+bf1"
        SurrogateLoss(spec, num_classes=C)(ref(x), t).backward()
        ll = SurrogateLoss(spec, num_classes=C, sync="ddp")(model(x[lo:hi]), t[lo:hi])
        ll.backward()
        for (name, p), q in zip(model.module.named_parameters(), ref.parameters()):
            d = _close(p.grad, q.grad)
            if not d <= 1e-5:
                out.append(f"rank {rank} DDP {path} {name}: |dgrad|={d:.3g}")
    _restore_native_flag(flag)


def _check_metrics(rank: int, out: list[str]) -> None:
    g = torch.Generator().manual_seed(21)
    z, t = _batch(21, n=5, h=33, w=29)
    pred = torch.where(torch.rand(t.shape, generator=g) < 0.3,
                       torch.randint(0, C, t.shape, generator=g), z.argmax(1))
    full = MetricAccumulator(C)
    full.update(pred, t)
    want = evaluate(pred, t, C)

    def same(a: dict, b: dict) -> bool:
        return set(a) == set(b) and all(
            a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)

    # rank 0: images 0..1 in one batch; rank 1: images 2..4 in two batches
    acc = MetricAccumulator(C)
    parts = [(0, 2)] if rank == 0 else [(2, 3), (3, 5)]
    for a, b in parts:
        acc.update(pred[a:b], t[a:b])
    local = dict(acc.compute())
    red = acc.reduced()
    for name in ("confusion", "band_confusion", "bf1_counts"):
        if not torch.equal(getattr(red, name), getattr(full, name)):
            out.append(f"rank {rank} reduced {name} differs from the single-process counts")
    if red.num_images != 5:
        out.append(f"rank {rank} reduced num_images={red.num_images}, want 5")
    got = acc.compute(sync=True)
    if not same(got, want):
        out.append(f"rank {rank} compute(sync=True) {got} != evaluate {want}")
    if not same(acc.compute(), local):
        out.append(f"rank {rank}: compute(sync=True) changed the local sums")
    # a rank that saw nothing still takes part and gets the global numbers
    acc2 = MetricAccumulator(C)
    if rank == 1:
        acc2.update(pred, t)
    got2 = acc2.compute(sync=True)
    if not same(got2, want):
        out.append(f"rank {rank} with an idle rank 0: {got2} != {want}")


def _check_all_reduce_sum(rank: int, out: list[str]) -> None:
    x = torch.tensor([1.0 + rank, 2.0 * rank], dtype=torch.float64, requires_grad=True)
    s = all_reduce_sum(x)
    (s * torch.tensor([3.0, 5.0], dtype=torch.float64)).sum().backward()
    if s.tolist() != [3.0, 2.0] or x.grad.tolist() != [6.0, 10.0] or world_size() != WORLD:
        out.append(f"rank {rank} all_reduce_sum: {s.tolist()} grad {x.grad.tolist()}")


def _worker(rank: int, init: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=300))
    out: list[str] = []
    counts: dict = {}
    done = False
    try:
        _check_all_reduce_sum(rank, out)
        _check_losses(rank, out, counts)
        _check_ddp_model(rank, out)
        _check_metrics(rank, out)
        done = True
    except Exception:  # reported to the parent; the peer then fails on its own timeout
        out.append(traceback.format_exc())
        raise
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"failures": out, "cases": counts.get("n", 0),
                       "max_rel_grad_err": counts.get("rel"),
                       "skipped": counts.get("skipped"), "done": done}, f)
        if done:
            dist.barrier()  # neither rank tears gloo down while its peer still talks
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    init = f"file://{d / 'rendezvous'}"
    try:
        mp.spawn(_worker, args=(init, str(d)), nprocs=WORLD, join=True)
    except mp.ProcessExitedException as exc:
        # gloo can abort a rank in its C++ teardown after all the work ("terminate called
        # without an active exception", seen once in CI); the results were recorded before
        # it, so only a rank that died before finishing its checks fails the test
        files = [d / f"rank{r}.json" for r in range(WORLD)]
        if not all(f.exists() and json.loads(f.read_text()).get("done") for f in files):
            raise
        print(f"a rank crashed in process-group teardown after finishing: {exc}")
    res = []
    for r in range(WORLD):
        with open(d / f"rank{r}.json") as f:
            res.append(json.load(f))
    return res


@pytest.mark.slow  # spawns 2 processes (torch + gloo each); the checks without them: below
def test_two_gloo_ranks_match_one_process(two_ranks):
    want_cases = len(SPECS) * len(PARAMETERIZATIONS) * (2 if native.available() else 1)
    print("max relative gradient error:", [r["max_rel_grad_err"] for r in two_ranks])
    for r, res in enumerate(two_ranks):
        assert res["failures"] == [], "\n".join(res["failures"])
        assert res["cases"] == want_cases, (r, res["cases"])
        # the native cases are left out only when the kernels cannot be built here (noted)
        assert (res["skipped"] is None) == native.available(), res["skipped"]
    if not native.available():
        import warnings

        warnings.warn(f"only the eager path was compared: {two_ranks[0]['skipped']}",
                      stacklevel=1)


def test_sync_option_is_checked():
    with pytest.raises(ValueError, match="sync must be one of 'none', 'ddp'"):
        SurrogateLoss("miou", num_classes=C, sync="allreduce")
    assert SurrogateLoss("miou", num_classes=C).sync == "none"
    assert "sync" not in SurrogateLoss("miou", num_classes=C, sync="ddp").to_dict()


def test_sync_without_process_group_is_a_clear_error():
    assert not dist.is_initialized()
    z, t = _batch(1)
    with pytest.raises(RuntimeError, match="initialized torch.distributed process group"):
        SurrogateLoss("miou", num_classes=C, sync="ddp")(z, t)
    acc = MetricAccumulator(C)
    acc.update(z.argmax(1), t)
    with pytest.raises(RuntimeError, match="initialized torch.distributed process group"):
        acc.compute(sync=True)
    with pytest.raises(TypeError, match="sync must be True or False"):
        acc.compute(sync="ddp")
    # unsynchronized use is unaffected
    assert world_size() == 1
    got, want = acc.compute(), evaluate(z.argmax(1), t, C)
    assert all(got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])) for k in want)
