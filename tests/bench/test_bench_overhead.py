"""bench/overhead.py at smoke size, so it cannot rot (its numbers live in docs/benchmarks.md)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests import REPO

SCRIPT = REPO / "bench" / "overhead.py"


@pytest.mark.slow
def test_overhead_bench_prints_the_ratio_and_the_breakdown(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--recipes", "demo", "--iterations", "3",
                          "--warmup-runs", "0", "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    ratio = re.search(r"^  overhead: (\d+\.\d+)x", out.stdout, re.M)
    assert ratio and float(ratio.group(1)) > 0
    phases = re.search(r"data ([\d.]+) ms .* step ([\d.]+) ms", out.stdout)
    assert phases and float(phases.group(1)) >= 0
    wall = re.search(r"trial wall ([\d.]+) s = set-up ([-\d.]+) s .* training ([\d.]+) s "
                     r".* evaluation ([\d.]+) s", out.stdout)
    assert wall and float(wall.group(3)) > 0 and float(wall.group(4)) > 0
    assert float(wall.group(1)) >= float(wall.group(3)) + float(wall.group(4))


def test_overhead_bench_refuses_a_missing_camvid_folder(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--recipes", "camvid", "--camvid",
                          str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "is not a folder" in out.stderr


@pytest.mark.parametrize("args, text", [
    (["--repeats", "0"], "--repeats and --iterations must be >= 1"),
    (["--iterations", "0"], "--repeats and --iterations must be >= 1"),
    (["--device", "cuda"], "CUDA is not available here"),
])
def test_overhead_bench_refuses_bad_options_in_one_line(args, text):
    import torch

    if args[0] == "--device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = subprocess.run([sys.executable, str(SCRIPT), "--recipes", "demo", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and text in out.stderr
