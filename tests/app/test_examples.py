"""The framework examples under examples/, run as a user runs them (a subprocess of this
Python) at tiny size: PyTorch Lightning, segmentation_models.pytorch (trained with the searched
loss, and searched through ``autoloss search --model smp_model:build``) and mmengine's
registry and Runner (the mmsegmentation loss). Each prints ``RESULT {json}`` last; the tests
assert on it: the loss is the searched one with the dataset's class count, the loss fell on
a fixed batch, the exact metrics are in [0, 1], the registry-built loss equals the plain one
times ``loss_weight``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss_ray import SurrogateLoss
from autoloss_ray.vocabulary import METRICS
from tests import REPO

EXAMPLES = REPO / "examples"
# one fixed batch of 8 synthetic images, seen every step: the loss must fall on it
TINY = ["--image-size", "32", "--train-size", "8", "--batch-size", "8", "--lr", "0.01"]


def run_example(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``examples/<script> args`` with one OpenMP thread: on the shared 2-core machine
    (load ~10) torch's default threads spun so that one U-Net step took 8.4 s, against 0.2 s
    with OMP_NUM_THREADS=1."""
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})


def result_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def searched_file(tmp_path_factory) -> Path:
    """A searched-looking miou loss file (admissible theta away from the identity) stored for
    21 classes: the examples must load it for the synthetic scenes' 8."""
    space = SurrogateLoss("miou", num_classes=21).space
    theta = np.clip(space.init + np.random.default_rng(0).uniform(-0.2, 0.2, space.dim),
                    space.low, space.high)
    path = tmp_path_factory.mktemp("loss") / "searched.json"
    SurrogateLoss("miou", num_classes=21, theta=theta).to_file(path)
    return path


def check_training(out: dict, steps: int) -> None:
    assert out["steps"] == steps
    assert out["last_loss"] < out["first_loss"] - 0.05, out  # it trained
    assert out["num_classes"] == 8  # the file's 21 classes replaced by the dataset's


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "smp_model:build"])
def test_lightning_example_trains_with_the_searched_loss(searched_file: Path, model: str) -> None:
    out = result_of(run_example("lightning_train.py", *TINY, "--max-steps", "8",
                                "--val-size", "4", "--loss", f"file:{searched_file}",
                                "--model", model))
    check_training(out, 8)
    assert out["loss"] == "miou"
    assert set(out["val"]) == set(METRICS)
    assert all(0.0 <= v <= 1.0 for v in out["val"].values()), out["val"]


@pytest.mark.slow
def test_smp_example_trains_a_unet_with_the_searched_loss(searched_file: Path) -> None:
    out = result_of(run_example("smp_train.py", *TINY, "--max-steps", "8", "--val-size", "4",
                                "--loss", f"file:{searched_file}"))
    check_training(out, 8)
    assert set(out["val"]) == set(METRICS)
    assert all(0.0 <= v <= 1.0 for v in out["val"].values()), out["val"]


@pytest.mark.slow
def test_mmseg_example_builds_from_the_config_and_trains(searched_file: Path) -> None:
    out = result_of(run_example("mmseg_train.py", *TINY, "--max-steps", "8",
                                "--loss", f"file:{searched_file}", "--loss-weight", "0.5"))
    assert out["loss_name"] == "loss_autoseg" and out["loss_weight"] == 0.5
    assert out["metric"] == "miou"
    assert out["registry_loss"] == pytest.approx(out["direct_loss"], abs=1e-7)
    assert 0.0 < out["registry_loss"] <= 0.5  # half of a loss in (0, 1]
    assert out["steps"] == 8
    assert out["last_loss"] < out["first_loss"] - 0.025, out


@pytest.mark.slow
@pytest.mark.parametrize("script", ["lightning_train.py", "smp_train.py", "mmseg_train.py"])
def test_examples_refuse_a_bad_loss_in_one_line(script: str, tmp_path: Path) -> None:
    proc = run_example(script, "--loss", f"file:{tmp_path / 'missing.json'}", *TINY,
                       "--max-steps", "1")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "missing.json" in last, proc.stderr[-2000:]
    help_text = run_example(script, "--help")
    assert help_text.returncode == 0 and "--loss" in help_text.stdout
    assert "--max-steps" in help_text.stdout


def test_smp_model_builds_a_unet_for_any_image_size() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import smp_model
    finally:
        sys.path.remove(str(EXAMPLES))
    import segmentation_models_pytorch as smp

    model = smp_model.build(num_classes=3)
    assert isinstance(model.net, smp.Unet)
    x = torch.randn(2, 3, 33, 47)  # not multiples of 32
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 3, 33, 47)
        # a size U-Net takes as it is: the wrapper adds nothing
        y = torch.randn(1, 3, 64, 32)
        torch.testing.assert_close(model(y), model.net(y))
    with pytest.raises(ValueError, match="num_classes"):
        smp_model.build(num_classes=1)


@pytest.mark.slow
def test_smp_unet_is_searched_through_model_option(tmp_path: Path) -> None:
    """``autoloss search --model smp_model:build`` with smp_model.py in the working folder:
    every trial trains the U-Net on the Ray workers, the exported loss loads with the task's
    class count, and the example trains the U-Net with it."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(EXAMPLES / "smp_model.py", work / "smp_model.py")
    store, export = tmp_path / "store", tmp_path / "loss.json"
    autoloss = Path(sys.executable).parent / "autoloss"
    cmd = [str(autoloss), "search", "--model", "smp_model:build", "--experiment", "smp",
           "--store", str(store), "--export", str(export), "--steps", "1", "--samples", "2",
           "--iterations", "2", "--image-size", "32", "--train-size", "8", "--batch-size", "4",
           "--gpus-per-trial", "0", "--max-concurrent", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=work,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from autoloss_ray.store import ExperimentStore

    rows = ExperimentStore(store).trials("smp")
    assert len(rows) == 2
    assert (rows["status"] == "ok").all(), rows["status"].tolist()
    assert (rows["model"] == "smp_model:build").all()  # the trials trained the U-Net
    loss = SurrogateLoss.from_file(export)
    assert loss.metric == "miou" and loss.num_classes == 8
    # the searched loss trains the U-Net it was searched for (the example's loop)
    out = result_of(run_example("smp_train.py", *TINY, "--max-steps", "8", "--val-size", "4",
                                "--loss", f"file:{export}"))
    assert out["steps"] == 8 and out["last_loss"] < out["first_loss"], out
