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


def _examples_common():
    """examples/_common.py (the three examples' shared flags, data and result), loaded under
    a name of its own: the examples import it as the script's sibling ``_common``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("examples_common", EXAMPLES / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_common_loads_a_preset_or_a_file_for_the_dataset(searched_file: Path,
                                                                  tmp_path: Path) -> None:
    common = _examples_common()
    preset = common.load_loss("preset:bf1", num_classes=8, ignore_index=255)
    assert preset.metric == "bf1" and preset.num_classes == 8
    for spec in (f"file:{searched_file}", str(searched_file)):  # file:PATH or PATH.json
        loss = common.load_loss(spec, num_classes=8, ignore_index=255)
        assert loss.metric == "miou" and loss.num_classes == 8  # the file's 21 replaced
    with pytest.raises(ValueError, match="preset:NAME, file:PATH or PATH.json"):
        common.load_loss("miou", num_classes=8, ignore_index=255)
    with pytest.raises(ValueError, match="missing.json.*does not exist"):
        common.load_loss(f"file:{tmp_path / 'missing.json'}", num_classes=8, ignore_index=255)


def test_examples_common_flags_and_their_checks(capsys) -> None:
    common = _examples_common()
    p = common.new_parser("What it does.\n\nMore.")
    common.add_loss_and_data_args(p)
    common.add_training_args(p)
    args = common.parse_checked(p, ["--train-size", "0"])  # 0: all
    assert (args.loss, args.dataset, args.train_size, args.val_size) == ("preset:miou",
                                                                          "synthetic", 0, 16)
    assert p.description == "What it does."
    with pytest.raises(SystemExit) as exc:
        common.parse_checked(p, ["--batch-size", "0"])
    assert exc.value.code == 2
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err
    # a training set only: no --val-size, and --train-size is checked when asked
    q = common.new_parser("Train only.")
    common.add_training_args(q, splits=False, steps_help="training iterations")
    assert "--val-size" not in q.format_help() and "(0: all)" not in q.format_help()
    with pytest.raises(SystemExit):
        common.parse_checked(q, ["--train-size", "0"],
                             at_least_one=(*common.AT_LEAST_ONE, "train_size"))
    assert "--train-size must be >= 1, got 0" in capsys.readouterr().err


def test_examples_common_sets_and_loss(searched_file: Path) -> None:
    common = _examples_common()
    kw = dict(dataset="synthetic", data_root=None, val_split="val", image_size=32, seed=0)
    train, val = common.train_val_sets(train_size=8, val_size=4, **kw)
    assert (len(train), len(val)) == (8, 4)
    assert train.train and not val.train  # only the training set is augmented
    assert train.num_classes == val.num_classes == 8
    train, val = common.train_val_sets(train_size=0, val_size=5, **kw)  # 0: all
    assert (len(train), len(val)) == (5, 5)
    train, val, loss = common.sets_and_loss(loss=f"file:{searched_file}", train_size=8,
                                            val_size=4, **kw)
    assert (len(train), len(val)) == (8, 4)
    assert (loss.metric, loss.num_classes) == ("miou", 8)  # the dataset's classes
    assert loss.ignore_index == train.ignore_index
    result = common.training_result(loss_fn=common.load_loss("preset:miou", num_classes=8,
                                                             ignore_index=255),
                                    num_classes=8, losses=[0.9, 0.5, 0.4], val={"miou": 0.5})
    assert result == {"loss": "miou", "num_classes": 8, "steps": 3, "first_loss": 0.9,
                      "last_loss": 0.4, "val": {"miou": 0.5}}
