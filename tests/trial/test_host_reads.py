"""autoloss_ray.host_reads.HostReads: the operations that would make the host wait for a CUDA
device, found in the operator stream on CPU."""

from __future__ import annotations

import torch

from autoloss_ray.host_reads import HostReads


def _ops(reads: HostReads) -> list[str]:
    return sorted(op for (op, _, _, _), n in reads.sites.items() for _ in range(n))


def test_device_side_work_reads_nothing():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    with HostReads() as reads:
        y = torch.where(x > 0, x * 2, 0.0)
        k = (x > 0).sum()
        z = torch.where(k > 0, y.sum() / k.clamp(min=1), y.sum() * 0.0)
        z.backward()
        x.detach().to("cpu")  # already on the host: no read
    assert reads.total == 0 and not reads.sites


def test_each_kind_of_host_read_is_counted_where_it_is_made():
    x = torch.tensor([1.0, -2.0, 3.0, 3.0])
    with HostReads() as reads:
        x.sum().item()
        bool((x > 0).any())
        int(x.argmax())
        x[x > 0]
        x.nonzero()
        torch.unique(x)
        torch.bincount(torch.tensor([0, 2]))
        torch.repeat_interleave(torch.tensor([1, 2]))
        torch.repeat_interleave(torch.tensor([1, 2]), output_size=3)  # size given: no read
    assert _ops(reads) == sorted(["_local_scalar_dense"] * 3 + [
        "index", "nonzero", "_unique2", "bincount", "repeat_interleave"])
    assert reads.total == 8
    here = {(f, fn) for (_, f, _, fn) in reads.sites}
    assert here == {(__file__, "test_each_kind_of_host_read_is_counted_where_it_is_made")}


def test_a_read_inside_a_backward_pass_is_counted():
    class ReadsInBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * float(g.abs().max())

    x = torch.ones(3, requires_grad=True)
    with HostReads() as reads:
        ReadsInBackward.apply(x).sum().backward()
    assert reads.by_function() == {"backward": 1}


def test_within_counts_only_the_reads_it_accepts():
    x = torch.tensor([1.0, 2.0])

    def inside() -> float:
        return x.sum().item()

    with HostReads(within=lambda st: any(f.name == "inside" for f in st)) as reads:
        inside()
        x.max().item()  # outside: in the total only
    assert reads.total == 2
    assert reads.by_function() == {"inside": 1}
