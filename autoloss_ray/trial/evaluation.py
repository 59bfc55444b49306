"""The six exact metrics of a trained model on a dataset (at the labels' resolution)."""

from __future__ import annotations

import torch

from autoloss_ray.trial.loop import _autocast
from autoloss_ray.vocabulary import DEFAULT_BOUNDARY_TOLERANCE

__all__ = ["evaluate_model"]


def evaluate_model(
    model: torch.nn.Module,
    dataset,
    *,
    num_classes: int,
    ignore_index: int,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    num_workers: int = 0,
    amp: bool = True,
    boundary_classes: str = "all",
    background_index: int = 0,
) -> dict[str, float]:
    """The six exact metrics of ``model`` on ``dataset``, accumulated over the whole dataset
    with :class:`MetricAccumulator`.

    Each item's prediction is the argmax of the model's logits upsampled (bilinear,
    ``align_corners=False``) to that item's label map, so the metrics are computed at the
    labels' resolution, whatever the size the model saw. Items may differ in image and label
    size (a dataset with ``eval_protocol="native"``): each loader batch of ``batch_size``
    items is split into groups of one image size and one label size, and each group is one
    forward pass. Labels are never resized here. ``boundary_classes`` / ``background_index``:
    which classes' boundaries BIoU's band and BF1's class set use (see
    :class:`MetricAccumulator`; ``"foreground"`` is the official VOC evaluation's).
    """
    from autoloss_ray.metrics import MetricAccumulator

    device = torch.device(device)
    pin = device.type == "cuda"
    if device.type == "cpu":
        from autoloss_ray.native import keep_freed_memory

        keep_freed_memory()  # reuse freed pages across batches (issue 31; see there)
    accumulator = MetricAccumulator(
        num_classes, ignore_index=ignore_index, boundary_tolerance=boundary_tolerance,
        device=device, boundary_classes=boundary_classes, background_index=background_index,
    )
    loader = _eval_loader(dataset, batch_size, num_workers, pin)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for groups in loader:
            for images, labels in groups:
                images = images.to(device, non_blocking=pin)
                labels = labels.to(device, non_blocking=pin)
                if labels.dtype == torch.uint8:  # see _eval_loader
                    labels = labels.long()
                with _autocast(device, amp):
                    logits = model(images)
                accumulator.update(_upsampled_classes(logits, labels.shape[-2:]), labels)
    model.train(was_training)
    return {k: float(v) for k, v in accumulator.compute().items()}


def _eval_loader(dataset, batch_size: int, num_workers: int = 0, pin: bool = False):
    """The evaluator's DataLoader: batches of :func:`_collate_by_size` groups. A project
    dataset (or subset) whose ``get`` takes ``uint8_labels`` hands its 8-bit label maps
    over as ``uint8`` (the caller widens each stacked batch with ``.long()``: one int64
    copy per batch instead of one per item plus the stack's; issue 31); others as they
    are."""
    source = _Uint8Labels(dataset) if _takes_uint8_labels(dataset) else dataset
    return torch.utils.data.DataLoader(
        source, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=pin, collate_fn=_collate_by_size,
    )


def _takes_uint8_labels(dataset) -> bool:
    import inspect

    from autoloss_ray.data.base import SegmentationDataset, SegmentationSubset

    base = dataset.dataset if isinstance(dataset, SegmentationSubset) else dataset
    if not isinstance(base, SegmentationDataset):
        return False
    try:
        return "uint8_labels" in inspect.signature(base.get).parameters
    except (TypeError, ValueError):
        return False


class _Uint8Labels(torch.utils.data.Dataset):
    """``dataset`` with ``dataset.get(i, uint8_labels=True)`` as its items."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset.get(int(index), uint8_labels=True)


def _argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=1)``, computed as ``logits.max(dim=1).indices``: the same int64
    map (both return the first maximal index; NaN counts as the maximum in both; tested on
    ties, NaN and infinities in ``tests/trial/test_native_eval.py``), several times faster on CPU,
    where ``argmax`` over the channel dimension of an NCHW tensor reduces across strided
    memory (0.18 s vs 0.03 s for [8, 11, 360, 480] float32 on one thread). Other devices
    keep ``argmax`` (not measured there)."""
    if logits.device.type == "cpu":
        return logits.max(dim=1).indices
    return logits.argmax(dim=1)


def _upsampled_classes(logits: torch.Tensor, size) -> torch.Tensor:
    """The class map ``argmax(dim=1)`` of ``logits`` upsampled bilinearly
    (``align_corners=False``, float32) to ``size`` (no upsample when it is already that
    size): int64 [N, *size], the same map as
    ``F.interpolate(logits.float(), size, mode="bilinear").argmax(dim=1)``.

    On CPU only the channels that can win somewhere are upsampled (issue 31: the upsample
    of all C channels to the label's resolution was a fifth of a native evaluation).
    Every output pixel of a bilinear upsample is a convex combination of one 2x2 block of
    neighbouring input pixels, so in image ``n`` class ``k`` can only be the maximum where,
    over some 2x2 block, the largest of its four values reaches the largest
    (over classes) of the smallest of each class's four values, less a tolerance
    (1e-5 x (1 + max |logit|), well above float32 rounding of a convex combination, about
    1e-6 x max |logit|). The other channels are below the maximum at every pixel. The
    candidates of all images are upsampled together as one stack of planes; each plane is
    upsampled independently by ``F.interpolate`` (same input, same weights: the same
    values as in the full tensor), and the argmax over an image's candidates (in class
    order, so ties go to the lowest class as in ``argmax``) is its class map. Non-finite
    or huge logits, inputs under 2x2 and other devices take the full upsample.

    Before that, finite CPU logits go to the fused kernel when it is available
    (:func:`_fused_upsample_argmax`: all classes, no [N, C, *size] tensor, the same map)."""
    logits = logits.float()
    size = tuple(int(v) for v in size)
    if tuple(logits.shape[-2:]) == size:
        return _argmax_classes(logits)
    n, c, h, w = logits.shape
    if logits.device.type != "cpu" or h < 2 or w < 2 or n == 0:
        return _argmax_classes(_upsample(logits, size))
    bound = logits.abs().amax(dim=(1, 2, 3))
    if not bool(torch.isfinite(bound).all()) or float(bound.max()) > 1e30:
        return _argmax_classes(_upsample(logits, size))
    fused = _fused_upsample_argmax(logits, size)
    if fused is not None:
        return fused
    top = _block_reduce(logits, torch.maximum)  # [N, C, h-1, w-1]: max over each 2x2 block
    floor = _block_reduce(logits, torch.minimum).amax(dim=1, keepdim=True)
    tol = (bound + 1).mul_(1e-5).view(n, 1, 1, 1)
    need = (top >= floor - tol).flatten(2).any(dim=2)  # [N, C] bool
    counts = need.sum(dim=1).tolist()
    if sum(counts) >= n * c:
        return _argmax_classes(_upsample(logits, size))
    planes = logits.reshape(n * c, h, w)[need.reshape(-1)]
    pad = 1 if planes.shape[0] == 3 else 0  # 3 channels may take another CPU kernel
    if pad:
        planes = torch.cat([planes, planes[:1]])
    up = _upsample(planes.unsqueeze(0), size)[0]
    out = torch.empty((n, *size), dtype=torch.int64)
    classes = torch.arange(c)
    start = 0
    for i, k in enumerate(counts):
        if k == 1:
            out[i] = int(classes[need[i]])
        else:
            idx = up[start:start + k].max(dim=0).indices
            torch.index_select(classes[need[i]], 0, idx.reshape(-1), out=out[i].view(-1))
        start += k
    return out


# (C, h, w, H, W, one thread) -> the kernel mode whose values equal F.interpolate's, or None
_FUSED_MODES: dict[tuple[int, ...], int | None] = {}
_FUSED_MODES_MAX = 4096
# the kernel's modes (bit 0: FMA in the source index; bits 1-2 / 3-4: none, fma(a, wa, b*wb)
# or fma(b, wb, a*wa) in the horizontal / vertical step; see _native/upsample.cpp), the one
# of PyTorch 2.x's x86-64 wheels (all three fused) first
_FMA_ALL = 1 | 1 << 1 | 1 << 3
_MODE_ORDER = (_FMA_ALL, *(fi | mh << 1 | mv << 3 for mv in range(3) for mh in range(3)
                           for fi in range(2) if fi | mh << 1 | mv << 3 != _FMA_ALL))


def _fused_upsample_argmax(logits: torch.Tensor, size) -> torch.Tensor | None:
    """``F.interpolate(logits, size, mode="bilinear").argmax(dim=1)`` (``align_corners=False``)
    by the fused CPU kernel (``_native/upsample.cpp``, issue 31), or None where it does not
    apply: kernels unavailable or switched off (``AUTOLOSS_RAY_NATIVE=0``), logits not a
    contiguous float32 NCHW CPU tensor, or a geometry on which the kernel's values are not
    PyTorch's (:func:`_fused_mode`). The caller has checked that the logits are finite.

    Per output pixel the kernel computes every class's upsampled value with PyTorch's CPU
    arithmetic (same weights, products and sums, FMAs where PyTorch's binary has them) and
    keeps the first largest, so the map is the full upsample's argmax to the bit, without
    the [N, C, *size] tensor: a third of the candidate-channel upsample's time on the CamVid
    hold-out (1 thread)."""
    from autoloss_ray import native

    if (logits.device.type != "cpu" or logits.dtype != torch.float32
            or not logits.is_contiguous() or logits.dim() != 4):
        return None
    lib = native.library()
    if lib is None:
        return None
    n, c, h, w = (int(v) for v in logits.shape)
    H, W = size
    mode = _fused_mode(lib, c, h, w, H, W)
    if mode is None:
        return None
    out = torch.empty((n, H, W), dtype=torch.int64)
    x, o = logits.data_ptr(), out.data_ptr()
    native.run_ranges(lambda i, g0, g1: lib.autoloss_upsample_argmax(
        x, c, h, w, H, W, mode, g0, g1, o), native.parallel_ranges(n * H, align=1))
    return out


def _fused_mode(lib, c: int, h: int, w: int, H: int, W: int) -> int | None:
    """The kernel mode (where PyTorch's binary fused a product and a sum into an FMA) whose
    upsampled values equal ``F.interpolate``'s, bit for bit, on random logits of this
    geometry (C channels, so that PyTorch picks the same CPU kernel as for the evaluator's
    logits; the mode of the argmax checked too), or None when none does (e.g. outputs with
    H + W <= 128, which PyTorch upsamples with another kernel): then the evaluator keeps its
    torch path. Checked once per geometry and thread setting, cached (one upsample of one
    image's worth of random logits)."""
    key = (c, h, w, H, W, torch.get_num_threads() == 1)
    if key in _FUSED_MODES:
        return _FUSED_MODES[key]
    g = torch.Generator().manual_seed(31)
    x = (torch.randn((1, c, h, w), generator=g) * 8).contiguous()
    ref = _upsample(x, (H, W))[0]
    ref_classes = ref.max(dim=0).indices
    found = None
    values = torch.empty((c, H, W), dtype=torch.float32)
    classes = torch.empty((1, H, W), dtype=torch.int64)
    for mode in _MODE_ORDER:
        if lib.autoloss_upsample_values(x.data_ptr(), h, w, H, W, mode, 0, c * H,
                                        values.data_ptr()) != 0:
            break
        if torch.equal(values, ref):
            if (lib.autoloss_upsample_argmax(x.data_ptr(), c, h, w, H, W, mode, 0, H,
                                             classes.data_ptr()) == 0
                    and torch.equal(classes[0], ref_classes)):
                found = mode
            break
    if len(_FUSED_MODES) >= _FUSED_MODES_MAX:
        _FUSED_MODES.clear()
    _FUSED_MODES[key] = found
    return found


def _block_reduce(x: torch.Tensor, op) -> torch.Tensor:
    """``op`` (torch.maximum / torch.minimum) over each 2x2 block of neighbouring pixels:
    [N, C, h, w] -> [N, C, h-1, w-1] (slices, far cheaper than max_pool2d on CPU)."""
    rows = op(x[:, :, :-1], x[:, :, 1:])
    return op(rows[..., :-1], rows[..., 1:])


def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
    return torch.nn.functional.interpolate(
        logits, size=tuple(size), mode="bilinear", align_corners=False
    )


def _collate_by_size(
    items: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A batch of (image [3, h, w], label [H, W]) items -> stacked groups of equal sizes, in
    order of first appearance."""
    groups: dict[tuple, tuple[list, list]] = {}
    for image, label in items:
        key = (tuple(image.shape), tuple(label.shape))
        images, labels = groups.setdefault(key, ([], []))
        images.append(image)
        labels.append(label)
    return [(torch.stack(i), torch.stack(t)) for i, t in groups.values()]

