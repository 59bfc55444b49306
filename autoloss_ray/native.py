"""Fused CPU kernels for the surrogate losses (and the evaluator's upsample + argmax and
metric counts), compiled on first use (optional, with fallback).

The eager PyTorch path of :mod:`autoloss_ray.losses` spends ~20 elementwise passes per
(pixel, class) on a curve. ``_native/kernels.cpp`` does softmax, curves, derivatives and sums
in one pass over cache-sized tiles. It is plain C++ with a C ABI (no torch headers; with the
evaluator's ``upsample.cpp`` and ``metrics.cpp`` it compiles side by side in a few seconds),
built with the system C++ compiler the first time a loss or a CPU evaluation runs, and cached
per source, flags, compiler, CPU and C library in a private directory; ranges of pixels run
on ``torch.get_num_threads()`` threads (ctypes releases the GIL).

When there is no compiler, the build fails, or ``AUTOLOSS_RAY_NATIVE=0`` is set, everything
runs on the eager path (same math; a one-line warning says why). Environment:

- ``AUTOLOSS_RAY_NATIVE``: ``0`` disables the kernels (default: enabled).
- ``AUTOLOSS_RAY_CACHE``: where the compiled library is kept (default
  ``~/.cache/autoloss-ray``; a temporary directory if that is not writable).
- ``CXX``: the compiler (default ``c++``, then ``g++``, then ``clang++``).
- ``AUTOLOSS_RAY_HUGEPAGES``: ``0`` stops advising the kernels' large output buffers to use
  transparent huge pages (:func:`empty`; default: advised, on Linux).
- ``AUTOLOSS_RAY_MALLOC``: ``0`` leaves glibc's malloc thresholds as they are
  (:func:`keep_freed_memory`; default: set once by a CPU evaluation, on glibc).

This module builds, caches and loads the kernels and runs them over ranges of pixels on
threads; the memory settings (:func:`empty`, :func:`keep_freed_memory`, exported here too) and
the reading of the on/off switches are :mod:`autoloss_ray.native_memory`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from autoloss_ray.native_memory import empty, keep_freed_memory, switched_on

__all__ = ["available", "empty", "enabled", "keep_freed_memory", "library", "parallel_ranges",
           "run_ranges", "unavailable_reason", "FLAGS", "LINK_FLAGS", "STRICT_FLAGS"]

SOURCE = Path(__file__).with_name("_native") / "kernels.cpp"
# The evaluator's kernels (issue 31), compiled on their own without fast-math and with no FMA
# contraction: the upsample + argmax reproduces PyTorch's arithmetic to the bit (its FMAs are
# explicit); the metrics' counts are integers.
STRICT_SOURCES = (SOURCE.with_name("upsample.cpp"), SOURCE.with_name("metrics.cpp"))
# Compile flags. -ffast-math lets the compiler vectorize the tile loops and sums; -mno-recip
# keeps divisions and square roots exact (otherwise vectorized 1/x is an estimate: 1/1 =
# 0.99999994, and p = 1 would not be 1). The link step gets no fast-math flag: with one, GCC
# links crtfastmath.o, whose constructor turns on flush-to-zero for the whole process.
FLAGS = ("-O3", "-march=native", "-ffast-math", "-mno-recip", "-fPIC", "-std=c++17")
STRICT_FLAGS = ("-O3", "-march=native", "-fno-fast-math", "-ffp-contract=off", "-fPIC",
                "-std=c++17")
LINK_FLAGS = ("-shared",)
ABI_VERSION = 11
_STALE_S = 3600  # temporary build files older than this are debris of a killed build

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_reason = ""
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_key() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _private_dir(path: Path) -> bool:
    """Create ``path`` (mode 0700) if needed; True if it is a directory we own, writable, and
    not world-writable (a library loaded from there runs in this process)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError:
        return False
    return (path.is_dir() and st.st_uid == os.getuid() and not st.st_mode & 0o022
            and os.access(path, os.W_OK | os.X_OK))


def _trusted_file(path: Path) -> bool:
    """True if ``path`` is a regular file owned by this user that group and others cannot
    write (only such a library is loaded into the process)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & 0o022)


def _fresh_private_dir() -> Path:
    """A new directory only this user can enter (mode 0700), for one process's build."""
    return Path(tempfile.mkdtemp(prefix="autoloss-ray-"))


def _cache_dir() -> Path:
    """The kernel cache: ``AUTOLOSS_RAY_CACHE`` or ``~/.cache/autoloss-ray``, then
    ``$TMPDIR/autoloss-ray-<uid>``, each accepted only if it is a directory owned by this user
    with no group/other write bit; else (with a warning) a fresh private directory."""
    base = os.environ.get("AUTOLOSS_RAY_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "autoloss-ray")
    tried = [Path(base), Path(tempfile.gettempdir()) / f"autoloss-ray-{os.getuid()}"]
    for cand in tried:
        if _private_dir(cand):
            return cand
        if cand == tried[0]:
            warnings.warn(f"autoloss-ray: kernel cache {base} is not a directory of yours "
                          "that group and others cannot write; using a private temporary one",
                          RuntimeWarning, stacklevel=4)
    fresh = _fresh_private_dir()
    warnings.warn(f"autoloss-ray: no kernel cache directory of yours that others cannot "
                  f"write (tried {', '.join(map(str, tried))}); building in {fresh}",
                  RuntimeWarning, stacklevel=4)
    return fresh


def _remove_stale_temporaries(folder: Path) -> None:
    now = time.time()
    for f in folder.glob("tmp-*"):
        try:
            if now - f.stat().st_mtime > _STALE_S:
                f.unlink()
        except OSError:
            pass


def _build() -> ctypes.CDLL:
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    units = ((SOURCE, FLAGS), *((source, STRICT_FLAGS) for source in STRICT_SOURCES))
    key = hashlib.sha256(b"\0".join([
        *(part for source, flags in units
          for part in (source.read_bytes(), " ".join(flags).encode())),
        " ".join(LINK_FLAGS).encode(), version.encode(), _cpu_key().encode(),
        " ".join(platform.libc_ver()).encode()])).hexdigest()[:16]
    folder = _cache_dir()
    target = folder / f"kernels-{key}.so"
    if target.exists() and not _trusted_file(target):
        fresh = _fresh_private_dir()
        warnings.warn(f"autoloss-ray: {target} is not a file of yours that others cannot "
                      f"write; not loading it, building in {fresh}", RuntimeWarning,
                      stacklevel=3)
        folder, target = fresh, fresh / target.name
    if not target.exists():
        _remove_stale_temporaries(folder)
        fd, tmp = tempfile.mkstemp(prefix="tmp-", suffix=".so", dir=folder)
        os.close(fd)
        objs = [f"{tmp[:-3]}-{i}.o" for i in range(len(units))]
        try:
            # the units compile side by side (the first build of a machine waits on them)
            procs = [subprocess.Popen([cxx, *flags, "-c", "-o", obj, str(source)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
                     for (source, flags), obj in zip(units, objs)]
            errors = []
            for proc in procs:
                try:
                    _, err = proc.communicate(timeout=300)
                except subprocess.TimeoutExpired:
                    for other in procs:
                        other.kill()
                        other.communicate()
                    raise RuntimeError(f"{cxx} took more than 300 s") from None
                if proc.returncode != 0:
                    errors.append(err)
            if not errors:
                res = subprocess.run([cxx, *LINK_FLAGS, "-o", tmp, *objs],
                                     capture_output=True, text=True, timeout=300)
                if res.returncode != 0:
                    errors.append(res.stderr)
            if errors:
                raise RuntimeError(f"{cxx} failed: {errors[0].strip()[-500:]}")
            os.replace(tmp, target)  # atomic: concurrent builders (Ray workers) agree
        finally:
            for f in (tmp, *objs):
                if os.path.exists(f):
                    os.unlink(f)
    lib = ctypes.CDLL(str(target))
    if lib.autoloss_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{target} has ABI {lib.autoloss_abi_version()}, "
                           f"expected {ABI_VERSION}")
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.autoloss_region_forward.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, i64,
                                            i32, ptr, ptr, i32, ptr, ptr, ptr, ptr, ptr]
    lib.autoloss_region_forward.restype = i32
    lib.autoloss_region_backward.argtypes = [i32, ptr, ptr, i64, i64, i64, i64,
                                             ptr, ptr, ptr, ptr, ptr]
    lib.autoloss_region_backward.restype = i32
    lib.autoloss_bf1_forward.argtypes = [i32, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64,
                                         ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.autoloss_bf1_forward.restype = i32
    lib.autoloss_bf1_backward.argtypes = [i32, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr,
                                          ptr, i64, i64, i64, i64, i64, ptr]
    lib.autoloss_bf1_backward.restype = i32
    lib.autoloss_exp.argtypes = [i32, ptr, ptr, i64]
    lib.autoloss_exp.restype = i32
    lib.autoloss_label_sites.argtypes = [ptr, ptr, i64, i64, i64, i64, ptr]
    lib.autoloss_label_sites.restype = i32
    lib.autoloss_target_prep.argtypes = [i32, ptr, i64, i32, i64, i64, i64, i64, i64, i64,
                                         i64, ptr, ptr, ptr, ptr]
    lib.autoloss_target_prep.restype = i32
    lib.autoloss_upsample_argmax.argtypes = [ptr, i64, i64, i64, i64, i64, i32, i64, i64, ptr]
    lib.autoloss_upsample_argmax.restype = i32
    lib.autoloss_upsample_values.argtypes = [ptr, i64, i64, i64, i64, i32, i64, i64, ptr]
    lib.autoloss_upsample_values.restype = i32
    lib.autoloss_metric_stats.argtypes = [ptr, ptr, i64, i64, i64, i32, i64, i64, i64, i64,
                                          i64, ptr, ptr, ptr]
    lib.autoloss_metric_stats.restype = i32
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first call; None when disabled or unavailable."""
    global _lib, _tried, _reason
    if not enabled():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                _lib = _build()
            except Exception as exc:  # noqa: BLE001 - any failure means: use the eager path
                _reason = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"autoloss-ray: fused CPU kernels unavailable ({_reason}); "
                              "using the eager PyTorch path (same results, slower)",
                              RuntimeWarning, stacklevel=3)
            _tried = True
    return _lib


def enabled() -> bool:
    """False when ``AUTOLOSS_RAY_NATIVE`` is 0/false/no/off (read on every call)."""
    return switched_on("AUTOLOSS_RAY_NATIVE")


def unavailable_reason() -> str:
    """Why the kernels could not be built ("" when they were, or were not tried)."""
    return _reason


def available() -> bool:
    """True when the fused CPU kernels are enabled and built."""
    return library() is not None


def parallel_ranges(total: int, *, threads: int | None = None, align: int = 128
                    ) -> list[tuple[int, int]]:
    """Split [0, total) into up to ``threads`` (default torch.get_num_threads()) contiguous
    ranges whose starts are multiples of ``align``."""
    k = max(1, threads if threads is not None else torch.get_num_threads())
    step = -(-total // k)
    step = max(align, -(-step // align) * align)
    return [(s, min(total, s + step)) for s in range(0, total, step)]


def _executor(workers: int) -> ThreadPoolExecutor:
    """The process's thread pool (threads start lazily, up to max(workers, CPUs)). A pool is
    never shut down: another thread may hold it and be about to submit; a larger one replaces
    it only when more workers are asked for than it has, and after a fork."""
    global _pool
    pid = os.getpid()
    with _lock:
        if _pool is None or _pool[0] != pid or _pool[1] < workers:
            size = max(workers, os.cpu_count() or 1)
            _pool = (pid, size, ThreadPoolExecutor(max_workers=size,
                                                   thread_name_prefix="autoloss-native"))
        return _pool[2]


def run_ranges(fn: Callable[[int, int, int], int], ranges: Sequence[tuple[int, int]]) -> None:
    """Call ``fn(i, g0, g1)`` for every range (in parallel when more than one); raise
    RuntimeError if any returns non-zero."""
    if len(ranges) == 1:
        codes = [fn(0, *ranges[0])]
    else:
        pool = _executor(len(ranges))
        futures = [pool.submit(fn, i, g0, g1) for i, (g0, g1) in enumerate(ranges)]
        codes = [f.result() for f in futures]
    if any(codes):
        raise RuntimeError(f"native kernel failed with codes {codes}")


def ptr(t: torch.Tensor | None) -> int | None:
    """data_ptr of a tensor (None for None)."""
    return None if t is None else t.data_ptr()
