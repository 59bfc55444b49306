"""Host synchronisations inside the proxy trial's training loop, counted with
``torch.cuda.set_sync_debug_mode("warn")`` (issue 17; a stage of ``bench/gpu_check.sh``).

Runs one short proxy trial with the sync debug mode on for the whole trial, records every
"synchronizing CUDA operation" warning with the Python stack that raised it, and counts those
raised while ``run_trial``'s training loop runs (a frame in ``train.py`` between the loop's
first and last line). Prints one line per call site (file:line, function, count) and totals.
The loss is read by the host every ``check_every`` iterations on purpose; those reads are
listed as ``expected``. On CPU (``--device cpu``, CI) the debug mode does nothing, so the
same trial runs under :class:`autoloss_ray.host_reads.HostReads`, which finds the operations
that would wait for a CUDA device in the operator stream (each a host read there), with the
same lines and totals; the surrogate takes its eager path there (``AUTOLOSS_RAY_NATIVE=0``),
the code a GPU runs without Triton, not the fused CPU kernels (whose Python differs).

Run: python bench/sync_check.py [--device cuda] [--iterations 20] [--tiny]
"""

from __future__ import annotations

import argparse
import collections
import inspect
import os
import sys
import traceback
import warnings


def _short(filename: str) -> str:
    """A file's path relative to the repository or to site-packages."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if filename.startswith(repo + os.sep):
        return os.path.relpath(filename, repo)
    return filename.split("site-packages/")[-1]


def loop_lines() -> tuple[str, int, int]:
    """(file, first line, last line) of the training loop in ``run_trial``."""
    from autoloss_ray import train

    src, start = inspect.getsourcelines(train.run_trial)
    first = next(i for i, s in enumerate(src) if "for it, (images, labels) in enumerate(" in s)
    last = next(i for i, s in enumerate(src) if 'result["iterations"] = done' in s)
    return inspect.getsourcefile(train.run_trial), start + first, start + last


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--tiny", action="store_true", help="tiny model and images (CI dry run)")
    args = ap.parse_args(argv)
    if not args.device.startswith("cuda"):
        os.environ["AUTOLOSS_RAY_NATIVE"] = "0"
    import torch

    from autoloss_ray.train import run_trial

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("sync_check.py: error: CUDA is not available", file=sys.stderr)
        return 2
    path, lo, hi = loop_lines()
    sites: collections.Counter = collections.Counter()
    in_loop = 0
    total = 0

    def record(message, category, filename, lineno, file=None, line=None):
        nonlocal in_loop, total
        if "synchroniz" not in str(message):
            return
        total += 1
        stack = traceback.extract_stack()[:-1]
        if not any(f.filename == path and lo <= f.lineno <= hi for f in stack):
            return
        in_loop += 1
        inner = [f for f in stack if "autoloss_ray" in f.filename or "torch" in f.filename]
        f = inner[-1] if inner else stack[-1]
        sites[(_short(f.filename), f.lineno, f.name)] += 1

    size = dict(model="tiny", image_size=32, batch_size=4, train_size=24) if args.tiny else \
        dict(model="deeplabv3_resnet50", image_size=128, batch_size=32, train_size=320)
    cfg = dict(dataset="synthetic", holdout_fraction=0.1, iterations=args.iterations,
               device=args.device, seed=0, check_every=10, **size)
    old = warnings.showwarning
    warnings.showwarning = record
    warnings.simplefilter("always")
    if args.device.startswith("cuda"):
        torch.cuda.set_sync_debug_mode("warn")
    reads = None
    try:
        if args.device.startswith("cuda"):
            result = run_trial(cfg)
        else:
            from autoloss_ray.host_reads import HostReads

            with HostReads(within=lambda st: any(f.filename == path and lo <= f.lineno <= hi
                                                 for f in st)) as reads:
                result = run_trial(cfg)
    finally:
        if args.device.startswith("cuda"):
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = old
    if reads is not None:
        for (_, fname, line, func), n in reads.sites.items():
            sites[(_short(fname), line, func)] += n
        in_loop, total = sum(reads.sites.values()), reads.total
        print("(CPU: host reads found in the operator stream by HostReads, each one a "
              "synchronisation on CUDA)")
    print(f"trial status {result['status']} on {result['device_name']}, "
          f"{result['iterations']} iterations in {result['train_seconds']:.2f} s")
    expected = 0
    for (fname, line, func), n in sites.most_common():
        tag = "expected" if func == "_first_nonfinite" else "SYNC"
        expected += n if tag == "expected" else 0
        print(f"  {tag:8s} {n:4d}x {fname}:{line} in {func}")
    print(f"syncs in the training loop: {in_loop} ({expected} expected loss reads, "
          f"{in_loop - expected} others) over {result['iterations']} iterations; "
          f"{total} in the whole trial")
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
