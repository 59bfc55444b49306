"""The user's own model and dataset as MODULE:FUNCTION (--model, --dataset): parsing, import,
the wrappers the trial uses, every refusal before Ray (one line), and the working folder
shipped to the Ray workers of an embedded Ray and of a multi-node cluster.

The modules are written to tmp_path, which becomes the working folder (monkeypatch.chdir) and
the first entry of sys.path, as the CLI puts it (autoloss_app.plugins.working_folder_on_path).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autoloss_app.options import OptionsError, SearchOptions
from autoloss_app.plugins import (
    check_plugins,
    job_has_working_dir,
    plugin_runtime_env,
    working_folder_on_path,
)
from autoloss_ray.data import build_dataset, holdout_split, subset
from autoloss_ray.data.plugin import PluginDataset, seeded
from autoloss_ray.models import build_model, param_groups
from autoloss_ray.plugins import (
    PluginModel,
    check_dataset,
    check_model,
    is_plugin,
    load_callable,
    parse_spec,
)
from autoloss_ray.train import check_trial_config
from tests import REPO

AUTOLOSS = str(Path(sys.executable).with_name("autoloss"))

# A model module as a user writes one: a torchvision model (dict output, a backbone), a tiny
# net at half resolution without a backbone, and broken ones.
MODELS_PY = '''
import os
import torch
from torch import nn

LOG = os.environ.get("PLUGIN_LOG")


def _log(what):
    if LOG:
        import ray
        try:
            node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "-"
        except Exception:
            node = "-"
        with open(LOG, "a") as f:
            f.write(json.dumps({"what": what, "file": __file__, "pid": os.getpid(),
                                "cwd": os.getcwd(), "node": node}) + "\\n")


import json


def lraspp(num_classes):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large
    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                     num_classes=num_classes)


class Half(nn.Module):
    """logits at half the input resolution, no backbone attribute"""
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def half(num_classes):
    _log("model")
    return Half(num_classes)


def not_a_module(num_classes):
    return 42


def raises(num_classes):
    raise RuntimeError("no GPU\\nhere")


def wrong_channels(num_classes):
    return nn.Conv2d(3, num_classes + 1, 1)


def flat(num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


class NoOut(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return {"aux": self.conv(x)}


class BadForward(nn.Module):
    def forward(self, x):
        raise ValueError("shapes do not fit")


def no_out(num_classes):
    return NoOut(num_classes)


def bad_forward(num_classes):
    return BadForward()


CONSTANT = 3
'''

# A dataset module: random scenes of `length` items; training items are flipped at random
# (torch.rand, seeded by the wrapper), evaluation items never; the label is the image's
# brightest channel, so a network can learn it.
DATA_PY = '''
import os
import json
import torch

LOG = os.environ.get("PLUGIN_LOG")


class Scenes(torch.utils.data.Dataset):
    num_classes = 3
    class_names = ("r", "g", "b")

    def __init__(self, split, train, seed, image_size, length=8, bad=None):
        self.train, self.size, self.length, self.bad = train, image_size, length, bad
        g = torch.Generator().manual_seed(1000 * seed + {"train": 0, "val": 1}[split])
        h, w = image_size
        self.images = torch.rand(length, 3, h, w, generator=g)

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        image = self.images[i]
        label = image.argmax(0)
        if self.train and torch.rand(()) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        if self.bad == "uint8":
            image = (image * 255).to(torch.uint8)
        elif self.bad == "float_label":
            label = label.float()
        elif self.bad == "hw_image":
            image = image[0]
        elif self.bad == "triple":
            return image, label, 0
        elif self.bad == "value":
            label = label + 5
        elif self.bad == "numpy":
            return image.numpy(), label.numpy()
        elif self.bad == "raise":
            raise KeyError(i)
        return image, label


def build(*, split, train, seed, image_size, length=8, bad=None):
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps({"what": "dataset", "file": __file__, "pid": os.getpid(),
                                "cwd": os.getcwd()}) + "\\n")
    return Scenes(split, train, seed, image_size, length, bad)


class NoClasses(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long)


def four_classes(split, train, seed, image_size):
    ds = Scenes(split, train, seed, image_size)
    ds.num_classes = 4
    return ds


def no_classes(split):
    return NoClasses()


def empty(split, train):
    return Scenes(split, train, 0, (8, 8), length=0)


def not_a_dataset(split):
    return 7


def raises(split):
    raise FileNotFoundError("/data/missing")
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working folder holding mymodels.py and mydata.py, first on sys.path."""
    (tmp_path / "mymodels.py").write_text(MODELS_PY)
    (tmp_path / "mydata.py").write_text(DATA_PY)
    (tmp_path / "broken.py").write_text("import numpy\nraise ImportError('needs CUDA 13')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("mymodels", "mydata", "broken"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    yield tmp_path
    for name in ("mymodels", "mydata", "broken"):
        sys.modules.pop(name, None)


# --- parsing and import ---------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("mymodels", "is not MODULE:FUNCTION"),
    ("a:b:c", "is not MODULE:FUNCTION"),
    (":build", "empty module part"),
    ("mymodels:", "empty function part"),
    ("my-models:build", "module 'my-models' is not a dotted Python name"),
    ("mymodels:build()", "function 'build()' is not a dotted Python name"),
])
def test_parse_spec_refuses_bad_strings(spec: str, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(spec, "model")
    assert parse_spec("pkg.sub:Builder.make", "dataset") == ("pkg.sub", "Builder.make")
    assert is_plugin("a:b") and not is_plugin("tiny") and not is_plugin(None)


def test_load_callable_refusals(workdir: Path):
    with pytest.raises(ValueError, match="no module named 'nomodule'.*working folder"):
        load_callable("nomodule:build", "model")
    with pytest.raises(ValueError, match=r"mymodels.*has no 'nope'"):
        load_callable("mymodels:nope", "model")
    with pytest.raises(TypeError, match="'CONSTANT' is a int, not a function"):
        load_callable("mymodels:CONSTANT", "model")
    with pytest.raises(ValueError, match="importing 'broken' raised ImportError: needs CUDA 13"):
        load_callable("broken:build", "model")
    assert load_callable("mymodels:half", "model").__name__ == "half"


# --- the model wrapper ----------------------------------------------------------------------

def test_torchvision_dict_model_is_wrapped(workdir: Path):
    torch.manual_seed(0)
    model = build_model("mymodels:lraspp", num_classes=5)
    assert isinstance(model, PluginModel)
    model.eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        out = model(x)
        reference = model.net(x)["out"]  # torchvision's own output, already at 48 x 64
    assert out.shape == (2, 5, 48, 64)
    assert torch.equal(out, reference)
    # a backbone: the paper's two learning-rate groups
    groups = param_groups(model, 0.01, 10.0)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[1]["lr"] == pytest.approx(0.1)
    n_backbone = sum(p.numel() for p in model.net.backbone.parameters())
    assert sum(p.numel() for p in groups[0]["params"]) == n_backbone
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters())


def test_half_resolution_model_is_upsampled_and_has_one_group(workdir: Path):
    torch.manual_seed(0)
    model = build_model("mymodels:half", num_classes=4)
    x = torch.randn(2, 3, 30, 40)
    out = model(x)
    raw = model.net(x)
    assert raw.shape == (2, 4, 15, 20)
    assert out.shape == (2, 4, 30, 40)
    assert torch.allclose(out, F.interpolate(raw, size=(30, 40), mode="bilinear",
                                             align_corners=False))
    assert getattr(model, "backbone", None) is None
    groups = param_groups(model, 0.02, 10.0)
    assert len(groups) == 1 and groups[0]["name"] == "all" and groups[0]["lr"] == 0.02
    assert len(groups[0]["params"]) == len(list(model.parameters()))
    # the state dict round-trips through build_model (how checkpoints are loaded)
    again = build_model("mymodels:half", num_classes=4)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again(x), out)
    with pytest.raises(ValueError, match="has no 'backbone'"):
        torch.save({}, workdir / "w.pt")
        build_model("mymodels:half", num_classes=4, backbone_weights=workdir / "w.pt")


@pytest.mark.parametrize("function, error, message", [
    ("not_a_module", TypeError, "returned a int; expected a torch.nn.Module"),
    ("raises", ValueError, r"raises\(num_classes=3\) raised RuntimeError: no GPU here"),
    ("wrong_channels", ValueError, r"returned shape \[2, 4, 16, 16\]; expected \[2, 3, h, w\]"),
    ("flat", ValueError, r"returned shape \[2, 3\]; expected \[2, 3, h, w\]"),
    ("no_out", ValueError, r"returned a dict without 'out' \(keys \['aux'\]\)"),
    ("bad_forward", ValueError, "forward on a probe batch .* raised ValueError: shapes do not"),
])
def test_check_model_refusals(workdir: Path, function: str, error: type, message: str):
    with pytest.raises(error, match=message) as info:
        check_model(f"mymodels:{function}", num_classes=3, image_size=(16, 16))
    assert "\n" not in str(info.value)
    assert f"mymodels:{function}" in str(info.value)


# --- the dataset wrapper --------------------------------------------------------------------

def test_dataset_plugin_train_and_holdout_copies(workdir: Path):
    ds = build_dataset("mydata:build", split="train", image_size=(12, 16), train=True, seed=3,
                       eval_protocol="native", inference_size=None, length=10)
    assert isinstance(ds, PluginDataset)
    assert (len(ds), ds.num_classes, ds.ignore_index) == (10, 3, 255)
    assert ds.class_names == ("r", "g", "b") and ds.image_size == (12, 16)
    import mydata

    reference = mydata.build(split="train", train=False, seed=3, image_size=(12, 16), length=10)
    # the hold-out part reads the evaluation copy: never flipped
    train_part, hold = holdout_split(ds, 0.3, seed=0)
    assert len(hold) == 3 and len(train_part) == 7
    for k in range(len(hold)):
        image, label = hold[k]
        ref_image, ref_label = reference[hold.indices[k]]
        assert torch.equal(image, ref_image) and torch.equal(label, ref_label)
        assert label.dtype == torch.int64 and image.dtype == torch.float32
    # training items: augmented reproducibly per (seed, index, draw); some draws flip
    i = train_part.indices[0]
    a, b = ds[(i, 5)], ds[(i, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    flips = {bool(torch.equal(ds[(i, d)][0], reference[i][0].flip(-1))) for d in range(12)}
    assert flips == {True, False}
    # a subset keeps working through _unwrap
    sub = subset(ds, 4, seed=1)
    assert len(sub) == 4 and sub[0][0].shape == (3, 12, 16)


def test_seeded_restores_the_global_generators():
    torch.manual_seed(7)
    np.random.seed(7)
    expected_t, expected_n = torch.rand(3), np.random.rand(3)
    torch.manual_seed(7)
    np.random.seed(7)
    with seeded(1, 2, 3):
        inside = torch.rand(2)
    with seeded(1, 2, 3):
        assert torch.equal(torch.rand(2), inside)
    assert torch.equal(torch.rand(3), expected_t)
    assert np.array_equal(np.random.rand(3), expected_n)


@pytest.mark.parametrize("bad, error, message", [
    ("uint8", TypeError, r"item 0: image is torch.uint8; expected a float tensor"),
    ("float_label", TypeError, r"item 0: label is torch.float32; expected an integer tensor"),
    ("hw_image", ValueError, r"item 0: image has shape \[8, 8\]; expected \[3, H, W\]"),
    ("triple", TypeError, r"item 0 is a tuple; expected a pair"),
    ("numpy", TypeError, r"expected \(torch.Tensor, torch.Tensor\), got \(ndarray, ndarray\)"),
    ("value", ValueError, r"label values \[5, 6, 7\] are outside the dataset's classes 0..2"),
    ("raise", ValueError, r"item 0: reading it raised KeyError: 0"),
])
def test_dataset_item_refusals(workdir: Path, bad: str, error: type, message: str):
    with pytest.raises(error, match=message) as info:
        check_dataset("mydata:build", splits=["train"], image_size=(8, 8),
                      options={"bad": bad})
    assert "--dataset 'mydata:build' split 'train'" in str(info.value)
    assert "\n" not in str(info.value)


def test_dataset_function_refusals(workdir: Path):
    with pytest.raises(ValueError, match="has no num_classes attribute; give it one or pass "
                       "--num-classes"):
        check_dataset("mydata:no_classes", splits=["train"])
    info = check_dataset("mydata:no_classes", splits=["train"], num_classes=6)
    assert info == {"num_classes": 6, "ignore_index": 255, "sizes": {"train": 4}}
    with pytest.raises(ValueError, match=r"num_classes 4 does not match dataset "
                       r"'mydata:build' \(3 classes\)"):
        check_dataset("mydata:build", splits=["train"], num_classes=4)
    with pytest.raises(ValueError, match="split 'train' holds no items"):
        check_dataset("mydata:empty", splits=["train"])
    with pytest.raises(TypeError, match="returned a int; expected a map-style torch Dataset"):
        check_dataset("mydata:not_a_dataset", splits=["train"])
    with pytest.raises(ValueError, match=r"raises\(split='val'\) raised FileNotFoundError: "
                       "/data/missing"):
        check_dataset("mydata:raises", splits=["val"])
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['colour'\]"):
        check_dataset("mydata:build", splits=["train"], options={"colour": 1})
    assert check_dataset("mydata:build", splits=["train", "val"],
                         image_size=(8, 8))["sizes"] == {"train": 8, "val": 8}


def test_trial_config_carries_the_names_as_strings():
    cfg = check_trial_config({"model": "mymodels:half", "dataset": "mydata:build",
                              "batch_size": 1, "iterations": 1})
    assert (cfg.model, cfg.dataset) == ("mymodels:half", "mydata:build")
    with pytest.raises(ValueError, match=r"expected one of \[.*\] or MODULE:FUNCTION"):
        check_trial_config({"model": "resnet"})
    with pytest.raises(ValueError, match="--dataset 'a:b:c' is not MODULE:FUNCTION"):
        check_trial_config({"dataset": "a:b:c"})
    with pytest.raises(ValueError, match="data_on_device needs a built-in dataset"):
        check_trial_config({"dataset": "mydata:build", "data_on_device": True})


def test_run_trial_with_both_plugins(workdir: Path):
    from autoloss_ray.train import run_trial

    result = run_trial({"model": "mymodels:half", "dataset": "mydata:build", "iterations": 3,
                        "batch_size": 2, "image_size": [8, 12], "holdout_fraction": 0.25,
                        "device": "cpu", "loss": "ce", "seed": 1})
    assert result["status"] == "ok", result["error"]
    assert (result["num_train"], result["num_eval"]) == (6, 2)
    assert 0.0 <= result["miou"] <= 1.0 and np.isfinite(result["final_loss"])


# --- before Ray: the options of search, retrain, evaluate -----------------------------------

def _search(**kw) -> SearchOptions:
    base = dict(model="mymodels:half", dataset="mydata:build", iterations=1, batch_size=2,
                image_size=16, steps=1, samples=2, store="runs/store")
    return SearchOptions(**{**base, **kw}).resolved()


@pytest.mark.parametrize("kw, message", [
    ({"model": "mymodels"}, "unknown model 'mymodels'; expected one of .* or MODULE:FUNCTION"),
    ({"model": ":half"}, "--model ':half' has an empty module part"),
    ({"model": "nomodule:build"}, "no module named 'nomodule'"),
    ({"model": "mymodels:nope"}, "has no 'nope'"),
    ({"model": "mymodels:raises"}, "raised RuntimeError: no GPU here"),
    ({"model": "mymodels:not_a_module"}, "returned a int; expected a torch.nn.Module"),
    ({"model": "mymodels:wrong_channels"}, r"expected \[2, 3, h, w\]"),
    ({"dataset": "mydata:"}, "--dataset 'mydata:' has an empty function part"),
    ({"dataset": "nodata:build"}, "no module named 'nodata'"),
    ({"dataset": "mydata:raises"}, "raised FileNotFoundError"),
    ({"dataset": "mydata:no_classes"}, "pass --num-classes"),
    ({"dataset": "mydata:build", "num_classes": 5}, "num_classes 5 does not match"),
    # probed with the built-in dataset's class count (synthetic: 8)
    ({"dataset": "synthetic", "model": "mymodels:flat"},
     r"returned shape \[2, 8\]; expected \[2, 8, h, w\]"),
])
def test_search_options_refuse_bad_plugins_in_one_line(workdir: Path, kw: dict, message: str):
    with pytest.raises(OptionsError, match=message) as info:
        _search(**kw)
    assert "\n" not in str(info.value)
    assert not (workdir / "runs").exists()


def test_search_options_check_backbone_weights_of_a_plugin_model(workdir: Path):
    torch.save({}, workdir / "empty.pt")
    with pytest.raises(OptionsError, match="the model has no 'backbone' to load them into"):
        _search(backbone_weights=str(workdir / "empty.pt"))
    with pytest.raises(OptionsError, match=r"do not match the model's backbone: \d+ of \d+ "
                       "tensors missing"):
        _search(model="mymodels:lraspp", backbone_weights=str(workdir / "empty.pt"))


def test_search_options_accept_plugins_with_a_builtin_dataset(workdir: Path):
    opts = _search(dataset="synthetic")  # the model is probed with synthetic's classes
    assert opts.trial_config()["model"] == "mymodels:half"
    opts = _search(dataset="mydata:no_classes", num_classes=4)
    assert opts.trial_config()["num_classes"] == 4
    # built-in names import nothing and ship nothing
    assert check_plugins(model="tiny", dataset="synthetic") is None


def test_cli_prints_one_line_before_ray(workdir: Path, capsys: pytest.CaptureFixture):
    from autoloss_app.cli import main

    code = main(["search", "--model", "mymodels:wrong_channels", "--dataset", "mydata:build",
                 "--steps", "1", "--samples", "2", "--iterations", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("autoloss search: error: --model "
                                                   "'mymodels:wrong_channels'")
    code = main(["retrain", "--loss", "ce", "--model", "mymodels:nope", "--dataset",
                 "mydata:build"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has no 'nope'" in err
    code = main(["retrain", "--loss", "ce", "--model", "tiny", "--dataset", "mydata:no_classes"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pass --num-classes" in err
    assert not (workdir / "runs").exists()


def test_working_folder_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    working_folder_on_path(str(tmp_path))
    assert sys.path[0] == str(tmp_path)
    working_folder_on_path(str(tmp_path))
    assert sys.path.count(str(tmp_path)) == 1


def test_runtime_env_only_for_a_module_of_the_working_folder(workdir: Path):
    assert plugin_runtime_env(["tiny", "synthetic"]) is None
    assert plugin_runtime_env([None, "camvid"]) is None
    # an installed package: the workers import it themselves
    assert plugin_runtime_env(["torchvision.models:resnet18"]) is None
    env = plugin_runtime_env(["mymodels:half", "synthetic"],
                             exclude=["runs/store", str(workdir / "data"), "/elsewhere/x",
                                      "s3://bucket/store", None])
    assert env["working_dir"] == str(workdir)
    assert {"/.venv/", "/.git/", "/runs/", "/runs/store", "/data"} <= set(env["excludes"])
    assert not any("elsewhere" in e or "bucket" in e for e in env["excludes"])
    (workdir / "pkg").mkdir()
    (workdir / "pkg" / "__init__.py").write_text("")
    assert plugin_runtime_env(["tiny", "pkg.sub:build"])["working_dir"] == str(workdir)


def test_job_has_working_dir():
    assert not job_has_working_dir({})
    config = {"runtime_env": {"working_dir": "gcs://_ray_pkg_abc.zip"}}
    assert job_has_working_dir({"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(config)})
    assert not job_has_working_dir({"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(
        {"runtime_env": {"pip": ["x"]}})})


# --- on Ray: the working folder reaches every worker ----------------------------------------

def _user_folder(tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "plugin.log"
    # the workers of a cluster's nodes do not inherit the driver's environment: the log path
    # is written into the modules
    for name, text in (("mymodels.py", MODELS_PY), ("mydata.py", DATA_PY)):
        (work / name).write_text(text.replace('LOG = os.environ.get("PLUGIN_LOG")',
                                              f"LOG = {str(log)!r}"))
    return work, log


def _env(log: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}


_TINY = ["--model", "mymodels:half", "--dataset", "mydata:build", "--steps", "1", "--samples",
         "2", "--iterations", "2", "--batch-size", "2", "--image-size", "16",
         "--holdout-fraction", "0.25", "--cpus-per-trial", "1", "--gpus-per-trial", "0",
         "--quiet"]


def _check_shipped(log: Path, work: Path) -> list[dict]:
    """The worker entries of the log: each imported the module from Ray's copy of the working
    folder (not from ``work``), the driver's check from ``work``."""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    driver = [e for e in entries if Path(e["file"]).parent == work]
    workers = [e for e in entries if Path(e["file"]).parent != work]
    assert driver, entries  # the check before Ray
    assert {e["what"] for e in workers} == {"model", "dataset"}, entries
    for e in workers:
        assert "runtime_resources" in e["file"] and "working_dir_files" in e["file"], e
    shipped = Path(workers[0]["file"]).parent
    if shipped.is_dir():  # Ray's copy: the modules without the store (runs/ is excluded)
        assert {"mymodels.py", "mydata.py"} <= {p.name for p in shipped.iterdir()}
        assert (work / "runs").is_dir() and not (shipped / "runs").exists()
    return workers


@pytest.mark.slow
def test_search_with_plugins_on_the_embedded_ray(tmp_path: Path):
    work, log = _user_folder(tmp_path)
    proc = subprocess.run([AUTOLOSS, "search", *_TINY, "--experiment", "plug",
                           "--store", "runs/store"], cwd=work, env=_env(log),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from autoloss_ray.store import ExperimentStore

    rows = ExperimentStore(work / "runs" / "store").trials("plug")
    assert len(rows) == 2 and (rows["status"] == "ok").all(), rows[["status", "error"]]
    assert set(rows["model"]) == {"mymodels:half"}
    workers = _check_shipped(log, work)
    assert len({e["pid"] for e in workers}) >= 1


@pytest.mark.slow
def test_retrain_and_evaluate_with_plugins(tmp_path: Path):
    """retrain on the embedded Ray (the modules shipped), then evaluate the checkpoint in this
    process: the same model on the same split scores what the retrain row says."""
    work, log = _user_folder(tmp_path)
    common = ["--model", "mymodels:half", "--dataset", "mydata:build"]
    proc = subprocess.run([AUTOLOSS, "retrain", *common, "--loss", "ce",
                           "--iterations", "4", "--batch-size", "2", "--image-size", "16",
                           "--gpus-per-trial", "0", "--eval-split", "val"],
                          cwd=work, env=_env(log), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_shipped(log, work)
    from autoloss_ray.store import ExperimentStore

    row = ExperimentStore(work / "runs" / "store").trials("retrain").iloc[0]
    assert row["status"] == "ok" and row["model"] == "mymodels:half"
    checkpoint = work / "runs" / "retrain" / "retrain" / "ce.pt"
    out = subprocess.run([AUTOLOSS, "evaluate", "--checkpoint", str(checkpoint),
                          "--dataset", "mydata:build", "--split", "val", "--json"],
                         cwd=work, env=_env(log), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("miou", "fwiou", "biou", "bf1", "macc", "gacc"):
        assert metrics[key] == pytest.approx(row[key], abs=1e-6), key
    # a dataset of another class count than the checkpoint's: one line, exit 2
    bad = subprocess.run([AUTOLOSS, "evaluate", "--checkpoint", str(checkpoint),
                          "--dataset", "mydata:four_classes", "--split", "val"],
                         cwd=work, env=_env(log), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert ("num_classes 3 does not match dataset 'mydata:four_classes' (4 classes)"
            in bad.stderr), bad.stderr


@pytest.mark.slow
def test_search_with_plugins_on_a_multi_node_cluster(tmp_path: Path):
    from ray.cluster_utils import Cluster

    work, log = _user_folder(tmp_path)
    # (the head's GCS takes a free port: gcs_server_port defaults to 0)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        proc = subprocess.run([AUTOLOSS, "search", *_TINY, "--experiment", "nodes",
                               "--store", "runs/store", "--address", cluster.address],
                              cwd=work, env=_env(log), capture_output=True, text=True,
                              timeout=300)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from autoloss_ray.store import ExperimentStore

    rows = ExperimentStore(work / "runs" / "store").trials("nodes")
    assert len(rows) == 2 and (rows["status"] == "ok").all(), rows[["status", "error"]]
    workers = _check_shipped(log, work)
    # every trial ran on the worker node (the head has no CPU)
    assert {e["node"] for e in workers if e["what"] == "model"} == {worker.node_id}
    assert set(rows["node_id"]) == {worker.node_id}


def test_help_names_module_function():
    out = subprocess.run([sys.executable, "-m", "autoloss_app.cli", "search", "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "MODULE:FUNCTION" in out.stdout and "--num-classes" in out.stdout
    text = textwrap.dedent(out.stdout)
    assert "shipped to every Ray worker" in " ".join(text.split())


@pytest.mark.slow
def test_search_with_plugins_as_a_job_submitted_with_its_working_dir(tmp_path: Path):
    """`ray job submit --working-dir .` (the Jobs API, on a head of the test's own): the job's
    copy of the folder is the driver's working folder and the workers'; the search leaves the
    job's working_dir alone (a second one would be a runtime_env conflict)."""
    import shutil
    import tempfile

    from tests.raynode import SUBMIT_JOB, head_ports, kill_head, start_head

    work, log = _user_folder(tmp_path)
    submit = SUBMIT_JOB.replace(
        "client.submit_job(entrypoint=entrypoint)",
        "client.submit_job(entrypoint=entrypoint, runtime_env=json.loads(sys.argv[4]))",
    ) + 'print(json.dumps({"status": str(status), "logs": client.get_job_logs(job_id)}))\n'
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    ports = head_ports()
    store = tmp_path / "store"
    import secrets

    # the Jobs API of Ray 2.60 wants token auth (as in tests/cluster/test_fake_cluster.py)
    env = {**_env(log), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    try:
        start_head(temp_dir, ports, "--num-cpus", "2", "--include-dashboard", "true",
                   "--dashboard-host", "127.0.0.1", env=env)
        entrypoint = " ".join([AUTOLOSS, "search", *_TINY, "--experiment", "job", "--store",
                               str(store)])
        job = subprocess.run(
            [sys.executable, "-c", submit, f"http://127.0.0.1:{ports['dashboard-port']}",
             entrypoint, "240", json.dumps({"working_dir": str(work)})],
            capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    finally:
        left = kill_head(temp_dir, ports["port"])
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the head survived: {left}"
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
    submitted = json.loads(job.stdout.strip().splitlines()[-1])
    assert submitted["status"] == "SUCCEEDED", submitted["logs"][-3000:]
    from autoloss_ray.store import ExperimentStore

    rows = ExperimentStore(store).trials("job")
    assert len(rows) == 2 and (rows["status"] == "ok").all(), rows[["status", "error"]]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    # the driver's check and every worker imported the job's copy, never `work` itself
    assert {e["what"] for e in entries} == {"model", "dataset"}, entries
    assert all("working_dir_files" in e["file"] for e in entries), entries
