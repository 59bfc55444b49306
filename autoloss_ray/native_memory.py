"""Memory settings of the fused CPU kernels and of a CPU evaluation, and the reading of the
on/off environment switches.

Two settings, each only advice to the operating system or the C library (no result changes,
only where memory comes from), each with its switch: :func:`empty` marks a kernel's large
output buffer ``MADV_HUGEPAGE``, so that its first write faults in 2 MiB pages instead of
4 KiB ones (``AUTOLOSS_RAY_HUGEPAGES=0``: not), and :func:`keep_freed_memory` sets glibc's
malloc thresholds once per process, so that large blocks freed are reused instead of unmapped
and faulted in again (``AUTOLOSS_RAY_MALLOC=0``: not). :func:`switched_on` is the one reading
of such a switch (``0``/``false``/``no``/``off`` is off; on by default), that of
``AUTOLOSS_RAY_NATIVE`` (:func:`autoloss_ray.native.enabled`) included. The environment as a
whole is listed in :mod:`autoloss_ray.native`, which builds and loads the kernels and still
exports :func:`empty` and :func:`keep_freed_memory`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from collections.abc import Sequence

import torch

__all__ = ["empty", "keep_freed_memory", "switched_on", "MALLOC_MMAP_THRESHOLD",
           "MALLOC_TRIM_THRESHOLD"]

_lock = threading.Lock()  # keep_freed_memory's once per process (the build has native's)


def switched_on(name: str) -> bool:
    """False when the environment variable ``name`` is 0/false/no/off; on by default."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


_MADV_HUGEPAGE = 14  # linux/mman.h
_HUGE_MIN = 8 << 20  # buffers from this size on ask for transparent huge pages
_libc_madvise = None


def _madvise():
    global _libc_madvise
    if _libc_madvise is None:
        fn = False
        if sys.platform.startswith("linux") and switched_on("AUTOLOSS_RAY_HUGEPAGES"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
            except (OSError, AttributeError):
                fn = False
        _libc_madvise = fn
    return _libc_madvise


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on CPU for a kernel's output; a large one (8 MiB
    or more) is marked MADV_HUGEPAGE before anything touches it, so that its first write
    faults in 2 MiB pages rather than 4 KiB ones. (Such buffers are fresh memory from the OS
    on every call: the allocator returns large blocks when they are freed, and with the
    kernel's ``transparent_hugepage`` in its default ``madvise`` mode, page faults were a
    fifth of a surrogate's time.) Only advice: where it is refused, nothing changes;
    ``AUTOLOSS_RAY_HUGEPAGES=0`` turns it off."""
    t = torch.empty(shape, dtype=dtype)
    nbytes = t.numel() * t.element_size()
    if nbytes >= _HUGE_MIN:
        fn = _madvise()
        if fn:
            start = (t.data_ptr() + 4095) & ~4095
            length = (t.data_ptr() + nbytes - start) & ~4095
            fn(start, length, _MADV_HUGEPAGE)
    return t


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h
MALLOC_MMAP_THRESHOLD = 128 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20
_malloc_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Once per process, on glibc: serve allocations up to 128 MiB from the heap and keep up
    to 256 MiB of freed memory at its top for reuse (``mallopt`` ``M_MMAP_THRESHOLD`` /
    ``M_TRIM_THRESHOLD``), so that a loop that allocates and frees the same large tensors
    reuses their pages instead of faulting fresh, zeroed ones in every time. Returns True
    when the thresholds are (now) set.

    Why (issue 31): glibc serves a block of 32 MiB or more (its dynamic threshold's ceiling)
    with its own ``mmap`` and unmaps it when freed, and hands free memory above twice its
    threshold at the heap's top back to the kernel. A native-resolution evaluation of the
    CamVid proxy (8 images of 96x128 through the tiny net, logits upsampled to 360x480)
    crosses both every batch: ~250,000 minor page faults (about 1 GB of zeroed pages) per
    pass over the 92 hold-out images, which made its forward pass cost twice the train-size
    one (whose smaller tensors stayed under the thresholds) instead of 1.33x. The cost: the
    process keeps up to 256 MiB it no longer uses instead of returning it; memory in use is
    unchanged. Setting either threshold turns glibc's dynamic adjustment off for the rest
    of the process (there is no way back; the values set are above its ceiling).
    ``AUTOLOSS_RAY_MALLOC=0``: do nothing (returns False); other C libraries: False."""
    global _malloc_kept
    if _malloc_kept is None:
        with _lock:
            if _malloc_kept is None:
                _malloc_kept = _set_malloc_thresholds()
    return _malloc_kept


def _set_malloc_thresholds() -> bool:
    if not switched_on("AUTOLOSS_RAY_MALLOC"):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
