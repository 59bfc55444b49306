"""bench/eval_protocol.py at smoke size, so it cannot rot (its numbers live in the docs)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests import REPO

SCRIPT = REPO / "bench" / "eval_protocol.py"


def test_eval_protocol_bench_prints_both_protocols_the_phases_and_the_ratio(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--only", "synthetic", "--iterations",
                          "2", "--repeats", "1", "--camvid", str(tmp_path / "none")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for protocol in ("native", "train_size"):
        assert re.search(rf"^\| {protocol} \| [\d.]+ \|", out.stdout, re.M), out.stdout
        assert re.search(rf"phases \({protocol}\): data [\d.]+ s .* metrics [\d.]+ s",
                         out.stdout), out.stdout
    assert re.search(r"^  native/train_size: \d+\.\d\dx$", out.stdout, re.M), out.stdout
    assert re.search(r"^  native/train_size in CPU time: \d+\.\d\dx$", out.stdout,
                     re.M), out.stdout
    assert re.search(r"^\| native \| [\d.]+ \| [\d., ]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$",
                     out.stdout, re.M), out.stdout  # wall, runs, CPU, mIoU, BF1
    assert "the goal, <= 1.5x on the CamVid hold-out, not measured" in out.stdout


def test_eval_protocol_bench_refuses_zero_repeats():
    out = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "0"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
