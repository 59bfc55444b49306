"""Evaluation at the labels' native resolution, training sizes of any aspect, and the data
checks that run before Ray (issue 19).

The native-resolution reference below shares no code with the evaluator: it reads the PNGs
with PIL, resizes the image with PIL, normalises it, runs the model on one image at a time,
upsamples the logits with ``F.interpolate(..., mode="bilinear", align_corners=False)`` to the
label's own size and scores with the brute-force metrics of ``test_metrics``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from autoloss_app.cli import main as cli_main
from autoloss_ray.checkpoint import load_checkpoint, save_checkpoint
from autoloss_ray.data import build_dataset, check_data
from autoloss_ray.data.transforms import inference_shape, parse_image_size
from autoloss_ray.models import build_model
from autoloss_ray.store import ExperimentStore, StoreError
from tests import REPO
from tests.metrics.test_metrics import ref_metrics, ref_stats

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
# two non-square label sizes (one landscape, one portrait), three images
SIZES = {"a.png": (30, 44), "b.png": (26, 20), "c.png": (30, 44)}


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _camvid(root: Path, split: str = "val", sizes=SIZES, *, annot: bool = True,
            bad: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A CamVid-layout split: images with structure, labels with blobs of 0..10 and 11."""
    rng = np.random.default_rng(seed)
    for name, (h, w) in sizes.items():
        coarse = rng.integers(0, 12, size=(h // 5 + 2, w // 5 + 2))
        label = np.kron(coarse, np.ones((5, 5), np.int64))[:h, :w].astype(np.uint8)
        if bad and name in bad:
            label[0, 0] = bad[name]
        palette = rng.integers(0, 256, size=(12, 3))
        image = np.clip(palette[np.minimum(label, 11)] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        _png(root / split / name, image)
        if annot:
            _png(root / f"{split}annot" / name, label)
    return root


def _native_predictions(model: torch.nn.Module, root: Path, split: str,
                        train_size: tuple[int, int], sizes=SIZES):
    """(prediction, label) at each label's native resolution, computed independently (see
    module doc): PIL resize, the model, bilinear upsampling of the logits, argmax."""
    model.eval()
    for name in sorted(sizes):
        image = Image.open(root / split / name).convert("RGB")
        label = np.asarray(Image.open(root / f"{split}annot" / name)).astype(np.int64)
        label[label == 11] = 255
        h0, w0 = label.shape
        scale = min(train_size) / min(h0, w0)  # shorter side -> the training size's
        h, w = int(round(h0 * scale)), int(round(w0 * scale))
        x = np.asarray(image.resize((w, h), Image.BILINEAR)).astype(np.float64) / 255.0
        x = torch.tensor(((x - MEAN) / STD).transpose(2, 0, 1)[None], dtype=torch.float32)
        with torch.no_grad():
            logits = model(x)
        up = F.interpolate(logits, size=(h0, w0), mode="bilinear", align_corners=False)
        yield up.argmax(dim=1)[0].numpy(), label


def _reference(model: torch.nn.Module, root: Path, split: str, train_size: tuple[int, int],
               sizes=SIZES):
    """Six metrics at native label resolution, computed independently (see module doc)."""
    C, ignore = 11, 255
    conf = np.zeros((C, C), np.int64)
    bconf = np.zeros((C, C), np.int64)
    cnt = np.zeros((4, C), np.int64)
    for pred, label in _native_predictions(model, root, split, train_size, sizes):
        c, b, n = ref_stats(pred, label, C, ignore, 5)
        conf, bconf, cnt = conf + c, bconf + b, cnt + n
    return ref_metrics(conf, bconf, cnt, C, ignore)


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A tiny model fitted for a few steps to the test images (a varied prediction)."""
    torch.manual_seed(3)
    model = build_model("tiny", num_classes=11)
    data = build_dataset("camvid", root=_camvid(tmp_path / "fit"), split="val",
                         image_size=(30, 44), train=False)
    x = torch.stack([data[i][0] for i in range(3)])
    y = torch.stack([data[i][1] for i in range(3)])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(25):
        opt.zero_grad()
        F.cross_entropy(model(x), y, ignore_index=255).backward()
        opt.step()
    return Path(save_checkpoint(tmp_path / "m.pt", model, model_name="tiny", num_classes=11,
                                dataset="camvid", image_size=(16, 24)))


def _evaluate_json(checkpoint: Path, root: Path, capsys, *options: str) -> dict:
    """`autoloss evaluate --json` of ``checkpoint`` on the CamVid-layout val split at
    ``root``: its metrics (the status must be 0)."""
    assert cli_main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "camvid",
                     "--data-root", str(root), "--split", "val", "--json", *options]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# labels large enough (H + W > 128) for the evaluator's fused upsample + argmax (issue 31)
LARGE = {"a.png": (90, 132), "b.png": (78, 60), "c.png": (90, 132)}


@pytest.mark.parametrize("batch_size,sizes", [("1", SIZES), ("3", SIZES), ("3", LARGE)])
def test_native_evaluation_equals_an_independent_computation(tmp_path, checkpoint, capsys,
                                                             batch_size, sizes,
                                                             monkeypatch) -> None:
    from autoloss_ray.trial import evaluation as E

    fused = []
    original = E._fused_upsample_argmax

    def spy(logits, size):
        out = original(logits, size)
        fused.append(out is not None)
        return out

    monkeypatch.setattr(E, "_fused_upsample_argmax", spy)
    root = _camvid(tmp_path / "camvid", sizes=sizes)
    store = tmp_path / "store"
    got = _evaluate_json(checkpoint, root, capsys, "--batch-size", batch_size,
                         "--store", str(store), "--experiment", "ev")
    model, meta = load_checkpoint(checkpoint)
    assert meta["image_size"] == [16, 24]
    if sizes is LARGE:  # every group went through the fused kernel, where there is one
        from autoloss_ray import native

        assert fused and all(fused) == native.available(), fused
    want = _reference(model, root, "val", (16, 24), sizes)
    assert 0.0 < want["bf1"] < 1.0 and 0.0 < want["miou"] < 1.0  # a non-trivial prediction
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    rows = ExperimentStore(store).trials("ev")
    assert list(rows["eval_protocol"]) == ["native"]


def test_evaluate_with_foreground_boundaries(tmp_path, checkpoint, capsys) -> None:
    """--boundary-classes foreground --background-index k (the official VOC evaluation's
    band): the CLI's numbers equal MetricAccumulator's (brute-force tested with the option in
    test_boundary_classes.py) on independently computed native predictions; only BIoU and
    BF1 move, and the option lands in the store row."""
    from autoloss_ray.metrics import MetricAccumulator

    background = 2
    root = _camvid(tmp_path / "camvid")
    store = tmp_path / "store"
    got = {classes: _evaluate_json(checkpoint, root, capsys, "--boundary-classes", classes,
                                   "--background-index", str(background), "--store",
                                   str(store), "--experiment", classes)
           for classes in ("all", "foreground")}
    model, _ = load_checkpoint(checkpoint)
    acc = MetricAccumulator(11, ignore_index=255, boundary_classes="foreground",
                            background_index=background)
    for pred, label in _native_predictions(model, root, "val", (16, 24)):
        acc.update(torch.from_numpy(pred), torch.from_numpy(label))
    want = acc.compute()
    for k, v in want.items():
        assert got["foreground"][k] == pytest.approx(float(v), abs=1e-12), k
    # BF1 drops the class from its set (on these 5 px blocks the tolerance-5 band covers
    # every pixel whichever classes draw it, so BIoU may not move)
    assert got["foreground"]["bf1"] != got["all"]["bf1"]
    for k in ("miou", "fwiou", "macc", "gacc"):
        assert got["foreground"][k] == got["all"][k], k
    extra = ExperimentStore(store).trials("foreground")["extra_json"].iloc[0]
    assert json.loads(extra) == {"boundary_classes": "foreground",
                                 "background_index": background}


def test_evaluate_refuses_a_background_index_outside_the_classes(tmp_path, checkpoint,
                                                                 capsys) -> None:
    root = _camvid(tmp_path / "camvid")
    assert cli_main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "camvid",
                     "--data-root", str(root), "--boundary-classes", "foreground",
                     "--background-index", "11"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "background_index must be a class in 0..10" in err


def test_train_size_protocol_is_still_available_and_differs(tmp_path, checkpoint,
                                                            capsys) -> None:
    root = _camvid(tmp_path / "camvid")
    store = tmp_path / "store"
    outs = {}
    for protocol in ("native", "train_size"):
        outs[protocol] = _evaluate_json(checkpoint, root, capsys, "--eval-protocol", protocol,
                                        "--store", str(store), "--experiment", protocol)
        assert list(ExperimentStore(store).trials(protocol)["eval_protocol"]) == [protocol]
    assert outs["native"]["bf1"] != outs["train_size"]["bf1"]
    # train_size: labels resized to the training size, every item 16x24
    ds = build_dataset("camvid", root=root, split="val", image_size=(16, 24), train=False,
                       eval_protocol="train_size")
    assert {tuple(ds[i][1].shape) for i in range(3)} == {(16, 24)}
    ds = build_dataset("camvid", root=root, split="val", image_size=(16, 24), train=False,
                       eval_protocol="native")
    assert [tuple(ds[i][1].shape) for i in range(3)] == [SIZES[n] for n in sorted(SIZES)]
    assert [tuple(ds[i][0].shape[1:]) for i in range(3)] == [(16, 23), (21, 16), (16, 23)]
    ds = build_dataset("camvid", root=root, split="val", image_size=16, train=False,
                       eval_protocol="native", inference_size="native")
    assert tuple(ds[1][0].shape[1:]) == (26, 20)


def test_image_sizes_parse_and_inference_keeps_the_aspect() -> None:
    assert parse_image_size(96) == 96 and parse_image_size("96") == 96
    assert parse_image_size("96x128") == (96, 128) and parse_image_size(["96", "128"]) == (96, 128)
    assert parse_image_size(["96x128"]) == (96, 128) and parse_image_size((64, 64)) == 64
    for bad in ("96x", "0x5", ["1", "2", "3"], "big", 0, True, 9.5):
        with pytest.raises(ValueError, match="image_size"):
            parse_image_size(bad)
    assert inference_shape((360, 480), (96, 96)) == (96, 128)
    assert inference_shape((360, 480), (96, 128)) == (96, 128)
    assert inference_shape((360, 480), (96, 96), "native") == (360, 480)
    assert inference_shape((360, 480), (96, 96), (50, 60)) == (50, 60)


def test_a_trial_trains_at_a_non_square_size(tmp_path) -> None:
    from autoloss_ray.train import run_trial

    result = run_trial({"model": "tiny", "image_size": "24x40", "iterations": 2,
                        "batch_size": 2, "train_size": 8, "holdout_fraction": 0.25,
                        "loss": "ce", "save_checkpoint": str(tmp_path / "m.pt")})
    assert result["status"] == "ok" and result["eval_protocol"] == "native"
    assert load_checkpoint(tmp_path / "m.pt")[1]["image_size"] == [24, 40]
    with pytest.raises(ValueError, match="eval_protocol"):
        run_trial({"model": "tiny", "eval_protocol": "half"})


def test_old_store_rows_read_with_a_null_protocol(tmp_path) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autoloss_ray.store import TRIAL_FILE_SCHEMA

    store = ExperimentStore(tmp_path / "s")
    store.write_trial({"experiment": "new", "trial_id": "t1", "status": "ok",
                       "eval_protocol": "train_size"})
    old_schema = pa.schema([f for f in TRIAL_FILE_SCHEMA if f.name != "eval_protocol"])
    path = Path(store.trial_path("old", "t0"))
    path.parent.mkdir(parents=True)
    table = pa.Table.from_pylist([{"trial_id": "t0", "kind": "search", "status": "ok",
                                   "finished_at": 0}], schema=old_schema)
    pq.write_table(table, path)
    rows = store.trials().set_index("trial_id")
    assert pd.isna(rows.loc["t0", "eval_protocol"])
    assert pd.isna(store.trials("old")["eval_protocol"].iloc[0])
    assert rows.loc["t1", "eval_protocol"] == "train_size"
    with pytest.raises(StoreError, match="eval_protocol"):
        store.write_trial({"experiment": "new", "trial_id": "t2", "status": "ok",
                           "eval_protocol": "square"})


# --------------------------------------------------------------------------- data checks
def test_check_data_samples_label_files_and_a_trial_names_an_unsampled_bad_file(tmp_path):
    from autoloss_ray.train import run_trial

    names = {f"{i}.png": (20, 24) for i in range(5)}
    root = _camvid(tmp_path / "c", "train", names, bad={"1.png": 40})
    # sample=2 reads the first and the last file: 1.png is not read
    assert check_data("camvid", root=root, splits=["train"], sample=2) == {"train": 5}
    with pytest.raises(ValueError, match=r"1\.png: label values \[40\]"):
        check_data("camvid", root=root, splits=["train"], sample=5)
    with pytest.raises(ValueError, match=r"1\.png: label values \[40\] are outside"):
        run_trial({"model": "tiny", "dataset": "camvid", "data_root": str(root),
                   "image_size": 16, "iterations": 4, "batch_size": 2, "loss": "ce",
                   "holdout_fraction": 0.4})


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")}


def _run_in_process(args: list[str], capsys) -> subprocess.CompletedProcess:
    """``python ARGS`` (``-m autoloss_app.cli ...`` or ``search.py ...``) through the entry
    point's main in this process (these calls refuse before Ray starts; a child would only
    add ~4 s of imports): the status and both streams."""
    import importlib.util

    if args[:2] == ["-m", "autoloss_app.cli"]:
        main, argv = cli_main, args[2:]
    else:
        spec = importlib.util.spec_from_file_location("search_script", args[0])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        main, argv = module.main, args[1:]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "Ray was started before the refusal"
    return subprocess.CompletedProcess(args, code, out.out, out.err)


SEARCH = ["-m", "autoloss_app.cli", "search", "--dataset", "camvid", "--image-size", "16",
          "--iterations", "2", "--steps", "1", "--samples", "2", "-q"]


@pytest.mark.parametrize(
    "case",
    ["search: no split folders", "search.py: bad label values", "retrain: no testannot",
     "evaluate: no valannot"],
)
def test_bad_data_exits_2_with_one_line_and_the_store_unchanged(tmp_path, case, capsys,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    ExperimentStore(store).write_trial({"experiment": "before", "trial_id": "t0",
                                        "status": "ok"})
    before = _tree(tmp_path / "store")
    if case == "search: no split folders":
        (tmp_path / "empty").mkdir()
        args = [*SEARCH, "--data-root", str(tmp_path / "empty")]
        expect = "train is missing"
    elif case == "search.py: bad label values":
        root = _camvid(tmp_path / "c", "train", {"a.png": (12, 16), "b.png": (12, 16)},
                       bad={"b.png": 200})
        args = [str(REPO / "search.py"), *SEARCH[3:], "--data-root", str(root)]
        expect = "b.png: label values [200] are outside"
    elif case == "retrain: no testannot":
        root = _camvid(tmp_path / "c", "train", {"a.png": (12, 16)})
        _camvid(root, "test", {"a.png": (12, 16)}, annot=False)
        args = ["-m", "autoloss_app.cli", "retrain", "--loss", "ce", "--dataset", "camvid",
                "--data-root", str(root), "--eval-split", "test"]
        expect = "testannot"
    else:
        root = _camvid(tmp_path / "c", "val", {"a.png": (12, 16)}, annot=False)
        ckpt = save_checkpoint(tmp_path / "m.pt", build_model("tiny", num_classes=11),
                               model_name="tiny", num_classes=11, dataset="camvid",
                               image_size=16)
        args = ["-m", "autoloss_app.cli", "evaluate", "--checkpoint", ckpt, "--dataset",
                "camvid", "--data-root", str(root), "--split", "val", "--experiment", "ev"]
        expect = "valannot"
    args += ["--store", str(store)]
    if case != "evaluate: no valannot":
        args += ["--experiment", "bad"]
    proc = _run_in_process(args, capsys)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert proc.stdout == ""
    assert _tree(tmp_path / "store") == before
    assert not (tmp_path / "tune").exists() and not (tmp_path / "retrain").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_evaluators_argmax_equals_torch_argmax_on_ties_nan_and_inf(dtype) -> None:
    """evaluation._argmax_classes (max(dim=1).indices on CPU, issue 31) is argmax(dim=1):
    the first maximal index, NaN counted as the maximum, in any layout."""
    from autoloss_ray.trial.evaluation import _argmax_classes

    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 3, (3, 11, 17, 23), generator=g).to(dtype)  # many ties
        u = torch.rand(x.shape, generator=g)
        x[u < 0.05] = float("nan")
        x[u > 0.97] = float("inf")
        x[(u > 0.5) & (u < 0.52)] = float("-inf")
        for v in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, 2:9, 3:17]):
            assert torch.equal(_argmax_classes(v), v.argmax(dim=1))


def _reference_classes(logits: torch.Tensor, size) -> torch.Tensor:
    up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return up.argmax(dim=1)


def _logits(kind: str, case: int, n: int, c: int, h: int, w: int, g) -> torch.Tensor:
    x = torch.randn(n, c, h, w, generator=g)
    if kind == "smooth":
        x = F.interpolate(torch.randn(n, c, 2, 2, generator=g) * 3, size=(h, w),
                          mode="bilinear", align_corners=False)
    elif kind == "ties":
        x = torch.randint(-2, 3, (n, c, h, w), generator=g).float()
    elif kind == "dominant":
        x[:, case % c] += 2 + case % 5
        if c > 3:
            x[:, :3] += 1.5  # three channels near the top: three candidate planes
    elif kind == "special":
        u = torch.rand(x.shape, generator=g)
        x[u < 0.02] = float("nan") if case % 2 else float("inf")
    elif kind == "scaled":  # large and tiny magnitudes, signed zeros
        x = x * 10.0 ** (case % 9 - 4)
        x[:, :, ::3] = -0.0 if case % 2 else 0.0
    if case % 7 == 0:
        x = x.to(torch.bfloat16)
    return x


@pytest.mark.parametrize("kernel", ["fused", "torch"])
@pytest.mark.parametrize("kind", ["noise", "smooth", "ties", "dominant", "special"])
def test_candidate_channel_upsample_equals_the_full_upsample(kind, kernel, monkeypatch) -> None:
    """evaluation._upsampled_classes (issue 31) upsamples only the channels that can win
    somewhere; its class map equals the argmax of the full bilinear upsample: random,
    smooth, tied, one-class-dominated and non-finite logits, 1 to 12 classes (3 candidate
    planes included), up- and downsampling, odd sizes, bf16 input. With the kernels on
    (``fused``) and off (``torch``): small outputs like these mostly stay on the torch path
    either way (the fused kernel's own cases are below)."""
    from autoloss_ray.trial.evaluation import _upsampled_classes

    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1" if kernel == "fused" else "0")
    g = torch.Generator().manual_seed(31)
    for case in range(60):
        n, c = (int(v) for v in torch.randint(1, 5, (1,), generator=g).tolist()
                + torch.randint(1, 13, (1,), generator=g).tolist())
        h, w, H, W = (int(v) for v in torch.randint(1, 24, (4,), generator=g))
        H, W = H * (1 + case % 3), W * (1 + case % 3)
        x = _logits(kind, case, n, c, h, w, g)
        got = _upsampled_classes(x, (H, W))
        assert got.dtype == torch.int64 and got.shape == (n, H, W)
        assert torch.equal(got, _reference_classes(x, (H, W))), (kind, case)


def _kernels():
    from autoloss_ray import native

    if not native.available():
        pytest.skip("no fused CPU kernels on this machine")
    return native.library()


# the CamVid hold-out's (96x128 -> 360x480) and others whose outputs PyTorch upsamples with
# its generic CPU kernel (H + W > 128): up, down, odd, one row or column of input
FUSED_GEOMETRIES = [(96, 128, 360, 480), (96, 96, 96, 96), (24, 32, 96, 128),
                    (96, 128, 361, 479), (30, 40, 100, 480), (7, 5, 133, 61), (2, 3, 150, 9),
                    (200, 150, 96, 72), (120, 90, 121, 89), (1, 40, 70, 80), (40, 1, 70, 80),
                    (64, 64, 64, 65)]


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_kernel_values_are_torchs_to_the_bit(threads) -> None:
    """_native/upsample.cpp in the mode evaluation._fused_mode picks reproduces
    F.interpolate(bilinear, align_corners=False) exactly (torch.equal of the float values),
    and on PyTorch's vectorized x86-64 builds some mode applies on every geometry above
    (issue 31; which FMAs a build fuses is the compiler's choice);
    its class map is the full upsample's argmax, on 1 or 2 threads."""
    import platform

    from autoloss_ray.trial import evaluation as E

    lib = _kernels()
    vectorized_x86 = (platform.machine().lower() in ("x86_64", "amd64")
                      and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(5)
        for h, w, H, W in FUSED_GEOMETRIES:
            for c in (1, 2, 4, 11):
                mode = E._fused_mode(lib, c, h, w, H, W)
                if vectorized_x86:  # PyTorch's AVX2/AVX512 builds: the kernel must apply
                    assert mode is not None, (c, h, w, H, W)
                if mode is None:
                    continue
                x = torch.randn(c, h, w, generator=g) * 30
                ref = F.interpolate(x[None], size=(H, W), mode="bilinear",
                                    align_corners=False)[0]
                values = torch.empty_like(ref)
                assert lib.autoloss_upsample_values(x.data_ptr(), h, w, H, W, mode, 0, c * H,
                                                    values.data_ptr()) == 0
                assert torch.equal(values, ref), (c, h, w, H, W)
                got = E._fused_upsample_argmax(x[None].repeat(3, 1, 1, 1), (H, W))
                assert got is not None and torch.equal(got[1], ref.argmax(dim=0))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["noise", "smooth", "ties", "dominant", "scaled"])
def test_fused_upsample_argmax_equals_the_full_upsample(kind, threads) -> None:
    """The evaluator's fused path (issue 31) gives the class map of F.interpolate(...)
    .argmax(dim=1) to the bit: random, smooth, tied (integer logits: exactly equal upsampled
    values, the first class wins), dominated, huge/tiny/signed-zero logits; 1 to 12 classes,
    1 to 5 images, the geometries above, bf16 input, 1 or 2 threads (uneven row ranges)."""
    from autoloss_ray.trial import evaluation as E

    lib = _kernels()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(17)
        used = 0
        for case in range(3 * len(FUSED_GEOMETRIES)):
            h, w, H, W = FUSED_GEOMETRIES[case % len(FUSED_GEOMETRIES)]
            n = 1 + case % 5
            c = 1 + (7 * case) % 12
            x = _logits(kind, case, n, c, h, w, g)
            ref = _reference_classes(x, (H, W))
            got = E._upsampled_classes(x, (H, W))
            assert torch.equal(got, ref), (kind, case)
            if E._fused_mode(lib, c, h, w, H, W) is not None:
                fused = E._fused_upsample_argmax(x.float(), (H, W))
                assert fused is not None and torch.equal(fused, ref), (kind, case)
                used += 1
        assert used > len(FUSED_GEOMETRIES)
    finally:
        torch.set_num_threads(before)


def test_fused_path_is_off_where_it_does_not_apply(monkeypatch) -> None:
    """No fused kernel for logits that are not contiguous float32 (the evaluator upcasts
    first), or with AUTOLOSS_RAY_NATIVE=0; the evaluator's maps are the same either way."""
    from autoloss_ray.trial import evaluation as E

    _kernels()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 96, 128, generator=g) * 4
    ref = _reference_classes(x, (360, 480))
    assert E._fused_upsample_argmax(x.to(torch.float64), (360, 480)) is None
    cl = x.contiguous(memory_format=torch.channels_last)
    assert E._fused_upsample_argmax(cl, (360, 480)) is None
    assert torch.equal(E._upsampled_classes(cl, (360, 480)), _reference_classes(cl, (360, 480)))
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "0")
    assert E._fused_upsample_argmax(x, (360, 480)) is None
    assert torch.equal(E._upsampled_classes(x, (360, 480)), ref)
    monkeypatch.setenv("AUTOLOSS_RAY_NATIVE", "1")
    assert torch.equal(E._fused_upsample_argmax(x, (360, 480)), ref)


CAMVID = REPO.parent / "shared" / "data" / "camvid"


@pytest.mark.skipif(not (CAMVID / "val").is_dir(), reason="no CamVid folder beside the repo")
def test_fused_upsample_argmax_on_camvid_images_equals_the_full_upsample() -> None:
    """Real images: the first 8 CamVid val images at the native protocol's inference size
    (96x128) through a tiny net (random init, and after three SGD steps on them), logits
    upsampled to the labels' 360x480: the fused path's class maps are the full upsample's."""
    from autoloss_ray.trial import evaluation as E

    _kernels()
    names = sorted((CAMVID / "val").glob("*.png"))[:8]
    images = torch.stack([
        torch.from_numpy(((np.asarray(Image.open(p).convert("RGB").resize(
            (128, 96), Image.BILINEAR), dtype=np.float64) / 255 - MEAN) / STD)
            .astype(np.float32)).permute(2, 0, 1) for p in names])
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=11)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    target = torch.randint(0, 11, (len(names), 12, 16), generator=torch.Generator()
                           .manual_seed(0)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    for trained in (False, True):
        for _ in range(3 if trained else 0):
            loss = F.cross_entropy(model.train()(images), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = model.eval()(images)
        ref = _reference_classes(logits, (360, 480))
        got = E._fused_upsample_argmax(logits, (360, 480))
        assert got is not None and torch.equal(got, ref), trained
        assert torch.equal(E._upsampled_classes(logits, (360, 480)), ref)


def test_candidate_channel_upsample_equals_the_full_upsample_on_a_trained_net() -> None:
    """The same on a model's logits at the CamVid hold-out's shapes (96x128 -> 360x480),
    where it skips channels (the case the saving comes from)."""
    from autoloss_ray.trial.evaluation import _upsampled_classes

    g = torch.Generator().manual_seed(7)
    base = torch.randn(4, 11, 6, 8, generator=g) * 4
    x = F.interpolate(base, size=(96, 128), mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    x[:, 5] -= 30  # a class no pixel is near: never a candidate
    assert torch.equal(_upsampled_classes(x, (360, 480)), _reference_classes(x, (360, 480)))


def test_label_check_fast_path_flags_exactly_what_unique_values_flag() -> None:
    """check_label_values finds bad pixels in one elementwise pass (issue 31); it raises for
    exactly the maps whose unique values hold a bad one, with the same message."""
    from autoloss_ray.data.transforms import check_label_values

    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.int16, np.int64, np.float32):
        for bad in (None, 11, 200, -1, 254, 256):
            lab = rng.integers(0, 11, (9, 13)).astype(np.int64)
            lab[0, :3] = 255
            if bad is not None:
                lab[4, 5] = bad
            lab = lab.astype(dtype)  # uint8 wraps -1 and 256 (to 255 and 0), as before
            values = np.unique(lab)
            flagged = values[((values < 0) | (values >= 11)) & (values != 255)]
            if flagged.size:
                expect = re.escape(f"label values {flagged[:10].tolist()} are outside")
                with pytest.raises(ValueError, match=expect):
                    check_label_values(lab, 11, 255, "m")
            else:
                check_label_values(lab, 11, 255, "m")
    check_label_values(np.array([[0.5, np.nan, 3.0]]), 11, 255, "floats")  # as np.unique: ok


def test_the_evaluators_loader_hands_8bit_labels_over_as_uint8_with_the_same_values(
        camvid_root) -> None:
    """evaluation._eval_loader (issue 31): CamVid's label maps come as uint8 batches (the
    evaluator widens each batch once), equal to the int64 items of the plain loader; a
    dataset whose ``get`` does not take ``uint8_labels`` is loaded as it is."""
    from autoloss_ray.data import build_dataset, holdout_split, subset
    from autoloss_ray.trial.evaluation import _collate_by_size, _eval_loader

    for protocol in ("native", "train_size"):
        full = build_dataset("camvid", root=camvid_root, split="train", image_size=32,
                             train=True, seed=3, eval_protocol=protocol)
        hold = holdout_split(subset(full, 12, seed=3), 0.25, seed=3)[1]
        plain = torch.utils.data.DataLoader(hold, batch_size=2, collate_fn=_collate_by_size)
        for got, want in zip(_eval_loader(hold, 2), plain, strict=True):
            for (x, y), (x0, y0) in zip(got, want, strict=True):
                assert y.dtype == torch.uint8 and y0.dtype == torch.int64
                assert torch.equal(x, x0) and torch.equal(y.long(), y0)

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.int32)

    (x, y), = next(iter(_eval_loader(Plain(), 2)))
    assert y.dtype == torch.int32 and x.shape == (2, 3, 4, 4)
