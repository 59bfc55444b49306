"""The folder dataset (``--dataset folder --data-root DIR``): items against the files read
independently, every refusal before Ray (one line naming the file), and one search ->
retrain -> evaluate run on the embedded Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoloss_app.cli import main as cli_main
from autoloss_app.options import OptionsError, SearchOptions
from autoloss_ray.data import build_dataset, check_data, holdout_split
from autoloss_ray.data.folder import FolderDataset, check_folder, read_classes, scan_folder
from autoloss_ray.store import ExperimentStore
from tests.tiny import tiny_trial

CLASSES = ("background", "road", "car", "person", "tree")
# (height, width) per stem: non-square, all different
SIZES = {"a": (20, 28), "b": (24, 18), "c": (16, 30), "d": (22, 22), "e": (18, 26),
         "f": (26, 20), "g": (15, 31), "h": (21, 17)}


def make_folder(root: Path, *, classes=CLASSES, sizes=SIZES, gray=("b",), palette=("c",),
                splits: dict[str, list[str]] | None = None, ignore: int = 255,
                seed: int = 0) -> dict[str, np.ndarray]:
    """A dataset folder: JPEG images (``gray`` stems grayscale), PNG masks (``palette`` stems
    palette mode) with values 0..C-1 and ``ignore``; returns the masks written, by stem."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    masks = {}
    for stem, (h, w) in sizes.items():
        if stem in gray:
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(
                root / "images" / f"{stem}.jpg")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / "images" / f"{stem}.jpg", quality=90)
        mask = rng.integers(0, len(classes), (h, w)).astype(np.uint8)
        mask[0, :3] = ignore
        if stem in palette:
            im = Image.fromarray(mask, "P")
            im.putpalette([(37 * i) % 256 for i in range(768)])
            im.save(root / "masks" / f"{stem}.png")
        else:
            Image.fromarray(mask, "L").save(root / "masks" / f"{stem}.png")
        masks[stem] = mask
    if splits is not None:
        (root / "splits").mkdir()
        for name, stems in splits.items():
            (root / "splits" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    return masks


SPLITS = {"train": ["a", "b", "c", "d", "e"], "val": ["f", "g"], "test": ["h"]}


def test_items_are_the_files_read_independently(tmp_path: Path) -> None:
    masks = make_folder(tmp_path / "d", splits=SPLITS)
    ds = build_dataset("folder", root=tmp_path / "d", split="train", train=False,
                       image_size=16, eval_protocol="native")
    assert isinstance(ds, FolderDataset)
    assert (ds.num_classes, ds.class_names, ds.ignore_index) == (5, CLASSES, 255)
    assert ds.stems == SPLITS["train"] and len(ds) == 5
    for i, stem in enumerate(ds.stems):
        image, label = ds.load_raw(i)
        with Image.open(tmp_path / "d" / "images" / f"{stem}.jpg") as im:
            expected = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(image, expected)
        np.testing.assert_array_equal(label, masks[stem])  # palette "c": indices, not colours
        # native protocol: the label keeps its own (non-square) size, untouched
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape[0] == 3 and y.dtype == torch.int64
        assert tuple(y.shape) == SIZES[stem]
        assert torch.equal(y, torch.from_numpy(masks[stem].astype(np.int64)))
        assert min(x.shape[1:]) == 16  # the shorter side at the training size's
    gray_image, _ = ds.load_raw(ds.stems.index("b"))
    assert gray_image.shape == (24, 18, 3)
    assert (gray_image[..., 0] == gray_image[..., 1]).all()
    assert (gray_image[..., 1] == gray_image[..., 2]).all()
    val = build_dataset("folder", root=tmp_path / "d", split="val", train=False, image_size=16)
    test = build_dataset("folder", root=tmp_path / "d", split="test", train=False, image_size=16)
    assert (val.stems, test.stems) == (["f", "g"], ["h"])
    assert tuple(val[0][1].shape) == (16, 16)  # train_size protocol: resized


def test_training_items_are_crops_of_the_training_size(tmp_path: Path) -> None:
    make_folder(tmp_path / "d")
    ds = build_dataset("folder", root=tmp_path / "d", image_size=(12, 16), train=True, seed=3)
    for i in range(len(ds)):
        x, y = ds[i, 7]
        assert tuple(x.shape) == (3, 12, 16) and tuple(y.shape) == (12, 16)
        values = set(torch.unique(y).tolist())
        assert values <= set(range(5)) | {255}
    assert torch.equal(ds[2, 7][1], ds[2, 7][1])  # seeded per (index, draw)


def test_without_splits_every_pair_is_training_data_and_the_holdout_comes_from_it(
        tmp_path: Path) -> None:
    make_folder(tmp_path / "d")
    ds = build_dataset("folder", root=tmp_path / "d", image_size=16)
    assert ds.stems == sorted(SIZES)
    train, hold = holdout_split(ds, 0.25, seed=0)
    assert len(train) + len(hold) == len(SIZES) and len(hold) == 2
    assert not set(train.indices) & set(hold.indices)
    with pytest.raises(FileNotFoundError, match=r"split 'val' needs .*splits/val\.txt.*"
                       r"without splits/ every pair is training data"):
        build_dataset("folder", root=tmp_path / "d", split="val", image_size=16)


def test_split_files_may_name_files_with_their_extension(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", splits={"train": ["a.jpg", "b", "c.png"], "val": ["d.JPG"]})
    layout = scan_folder(tmp_path / "d")
    assert layout.splits["train"] == ("a", "b", "c") and layout.splits["val"] == ("d",)
    (tmp_path / "d" / "splits" / "val.txt").write_bytes(b"d\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"split file .*val\.txt is not UTF-8 text"):
        scan_folder(tmp_path / "d")


def test_train_is_every_pair_the_other_splits_leave_when_train_txt_is_absent(
        tmp_path: Path) -> None:
    make_folder(tmp_path / "d", splits={"val": ["a", "b"], "test": ["c"]})
    layout = scan_folder(tmp_path / "d")
    assert layout.splits["train"] == ("d", "e", "f", "g", "h")
    assert check_folder(tmp_path / "d", splits=["train", "val", "test"]) == {
        "train": 5, "val": 2, "test": 1}


def test_classes_txt_gives_the_class_count_three_classes(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", classes=("bg", "fg", "edge"))
    assert read_classes(tmp_path / "d") == ("bg", "fg", "edge")
    assert build_dataset("folder", root=tmp_path / "d").num_classes == 3
    opts = SearchOptions(dataset="folder", data_root=str(tmp_path / "d"),
                         store=str(tmp_path / "s")).resolved()
    assert opts.num_classes == 3 and opts.trial_config()["num_classes"] == 3
    with pytest.raises(OptionsError, match=r"num_classes 11 does not match .*classes\.txt, "
                       r"which names 3"):
        SearchOptions(dataset="folder", data_root=str(tmp_path / "d"), num_classes=11,
                      store=str(tmp_path / "s")).resolved()


def test_a_custom_ignore_index_is_ignored_and_must_not_be_a_class(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", ignore=9)
    with pytest.raises(ValueError, match=r"masks/a\.png holds values \[9\] that are neither"):
        check_folder(tmp_path / "d")
    assert check_folder(tmp_path / "d", ignore_index=9) == {"train": 8}
    assert check_data("folder", root=tmp_path / "d", splits=["train"],
                      dataset_options={"ignore_index": 9}) == {"train": 8}
    ds = build_dataset("folder", root=tmp_path / "d", ignore_index=9, train=False,
                       eval_protocol="native")
    assert ds.ignore_index == 9 and int(ds[0][1][0, 0]) == 9
    opts = SearchOptions(dataset="folder", data_root=str(tmp_path / "d"), ignore_index=9,
                         store=str(tmp_path / "s")).resolved()
    assert opts.trial_config()["dataset_options"] == {"ignore_index": 9}
    with pytest.raises(OptionsError, match=r"ignore_index 3 is a class id .*names 5 classes"):
        SearchOptions(dataset="folder", data_root=str(tmp_path / "d"), ignore_index=3,
                      store=str(tmp_path / "s")).resolved()
    with pytest.raises(OptionsError, match=r"--ignore-index is for --dataset folder"):
        SearchOptions(ignore_index=9, store=str(tmp_path / "s")).resolved()


def test_check_data_reads_every_mask_not_a_sample(tmp_path: Path) -> None:
    sizes = {f"s{i:02d}": (8, 10) for i in range(40)}
    make_folder(tmp_path / "d", sizes=sizes, gray=(), palette=())
    bad = np.zeros((8, 10), np.uint8)
    bad[4, 4] = 7
    Image.fromarray(bad, "L").save(tmp_path / "d" / "masks" / "s17.png")  # not on a 16-sample
    with pytest.raises(ValueError, match=r"masks/s17\.png holds values \[7\]"):
        check_data("folder", root=tmp_path / "d", splits=["train"], sample=16)


def _break(root: Path, case: str) -> str:
    """Break a good folder at ``root`` as ``case`` says; returns the text the error shows."""
    if case == "image without mask":
        (root / "masks" / "c.png").unlink()
        return "images/c.jpg has no mask"
    if case == "mask without image":
        (root / "images" / "d.jpg").unlink()
        return "masks/d.png has no image"
    if case == "mask of another size":
        Image.fromarray(np.zeros((20, 27), np.uint8), "L").save(root / "masks" / "a.png")
        return "masks/a.png is 27x20 (WxH) but its image"
    if case == "mask turned by 90 degrees":
        Image.fromarray(np.zeros((28, 20), np.uint8), "L").save(root / "masks" / "a.png")
        return "masks/a.png is 20x28 (WxH) but its image " + str(root / "images" / "a.jpg") + (
            " is 28x20; it is the image turned by 90 degrees")
    if case == "value neither class nor ignore":
        mask = np.zeros((24, 18), np.uint8)
        mask[3, 3] = 5
        Image.fromarray(mask, "L").save(root / "masks" / "b.png")
        return "masks/b.png holds values [5] that are neither a class id 0..4"
    if case == "empty split":
        (root / "splits" / "val.txt").write_text("\n\n")
        return "split file " + str(root / "splits" / "val.txt") + " lists no stems"
    if case == "stem listed twice":
        (root / "splits" / "train.txt").write_text("a\nb\na\n")
        return "splits/train.txt line 3 lists stem 'a' a second time"
    if case == "stem in train and val":
        (root / "splits" / "val.txt").write_text("f\na\n")
        return "stem 'a' is listed in"
    if case == "stem not in the folder":
        (root / "splits" / "test.txt").write_text("zz\n")
        return "splits/test.txt line 1 lists stem 'zz', which has no image and mask pair"
    if case == "missing classes.txt":
        (root / "classes.txt").unlink()
        return "classes.txt is missing"
    if case == "RGB mask":
        Image.new("RGB", (28, 20)).save(root / "masks" / "a.png")
        return "mask " + str(root / "masks" / "a.png") + " is a RGB image"
    if case == "JPEG mask":
        Image.new("L", (28, 20)).save(root / "masks" / "e.jpg")
        return "masks/e.jpg is not a PNG"
    if case == "two images of one stem":
        Image.new("RGB", (28, 20)).save(root / "images" / "a.png")
        return "have the same stem 'a'"
    raise AssertionError(case)


REFUSALS = ["image without mask", "mask without image", "mask of another size",
            "mask turned by 90 degrees",
            "value neither class nor ignore", "empty split", "stem listed twice",
            "stem in train and val", "stem not in the folder", "missing classes.txt",
            "RGB mask", "JPEG mask", "two images of one stem"]


@pytest.mark.parametrize("case", REFUSALS)
def test_check_folder_refuses_in_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    root = tmp_path / "d"
    make_folder(root, splits=SPLITS)
    check_folder(root, splits=["train", "val", "test"])
    expect = _break(root, case)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        check_folder(root, splits=["train", "val", "test"])
    message = str(info.value)
    assert expect in message and "\n" not in message, message


def test_classes_txt_problems_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("bg\n\nfg\n")
    with pytest.raises(ValueError, match=r"classes\.txt line 2 is blank"):
        read_classes(tmp_path)
    (tmp_path / "classes.txt").write_text("bg\nfg\nbg\n\n")
    with pytest.raises(ValueError, match=r"classes\.txt line 3 repeats the class name 'bg'"):
        read_classes(tmp_path)
    (tmp_path / "classes.txt").write_text("only\n")
    with pytest.raises(ValueError, match=r"names 1 class\(es\); .* at least 2"):
        read_classes(tmp_path)


def _refused(argv: list[str], capsys) -> str:
    """Run the CLI in this process; assert exit 2, one stderr line, nothing on stdout and Ray
    not started; return the line."""
    capsys.readouterr()
    code = cli_main(argv)
    out = capsys.readouterr()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "Ray was started before the refusal"
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and out.out == "", out
    return lines[0]


@pytest.mark.parametrize("case", ["mask of another size", "stem listed twice",
                                  "value neither class nor ignore", "missing classes.txt",
                                  "empty split"])
def test_cli_refuses_bad_folders_before_ray(tmp_path: Path, case: str, capsys) -> None:
    from autoloss_ray.checkpoint import save_checkpoint
    from autoloss_ray.models import build_model

    root = tmp_path / "d"
    make_folder(root, splits=SPLITS)
    expect = _break(root, case)
    store = tmp_path / "store"
    folder = ["--dataset", "folder", "--data-root", str(root), "--store", str(store)]
    line = _refused(["search", *folder, "--experiment", "s", "--steps", "1", "--samples", "2",
                     "-q"], capsys)
    assert line.startswith("autoloss search: error: ") and expect in line, line
    from autoloss_app.cli import search_script_main  # search.py, for `ray job submit`

    capsys.readouterr()
    assert search_script_main([*folder, "--experiment", "s", "--address", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("search.py: error: ") and expect in err[0], err
    line = _refused(["retrain", "--loss", "ce", "--eval-split", "val", *folder,
                     "--experiment", "r"], capsys)
    assert line.startswith("autoloss retrain: error: ") and expect in line, line
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("tiny", num_classes=5),
                           model_name="tiny", num_classes=5, dataset="folder", image_size=16)
    line = _refused(["evaluate", "--checkpoint", ckpt, "--split", "train", *folder,
                     "--experiment", "e"], capsys)
    assert line.startswith("autoloss evaluate: error: ") and expect in line, line
    assert not store.exists() and not (tmp_path / "tune").exists()


def test_cli_refuses_a_split_the_folder_lacks_and_a_class_id_as_ignore(tmp_path: Path,
                                                                       capsys) -> None:
    root = tmp_path / "d"
    make_folder(root)  # no splits/
    line = _refused(["retrain", "--loss", "ce", "--dataset", "folder", "--data-root", str(root),
                     "--store", str(tmp_path / "s"), "--eval-split", "val"], capsys)
    assert "split 'val' needs " + str(root / "splits" / "val.txt") in line, line
    line = _refused(["search", "--dataset", "folder", "--data-root", str(root), "--store",
                     str(tmp_path / "s"), "--ignore-index", "0"], capsys)
    assert "ignore_index 0 is a class id" in line, line
    line = _refused(["retrain", "--loss", "ce", "--store", str(tmp_path / "s"),
                     "--ignore-index", "9"], capsys)
    assert "--ignore-index is for --dataset folder" in line, line


MYNET_PY = """
from torch import nn


class HalfNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        return {"out": self.body(x)}


def build(num_classes):
    return HalfNet(num_classes)
"""


@pytest.mark.slow
def test_search_retrain_evaluate_on_a_folder_with_the_embedded_ray(tmp_path: Path,
                                                                   capsys, monkeypatch) -> None:
    """search (1 step, 2 samples) -> export -> retrain --eval-split val -> evaluate --split
    test, on a 5-class folder of non-square JPEGs, each command starting its own Ray, with
    the user's own network (``--model mynet:build``, a module of the working folder that
    returns torchvision's dict at half resolution) -- issue 28's "done when"."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "mynet.py").write_text(MYNET_PY)
    monkeypatch.chdir(work)
    root = tmp_path / "d"
    sizes = {f"im{i:02d}": (20 + i % 5, 28 - i % 7) for i in range(14)}
    make_folder(root, sizes=sizes, gray=("im03",), palette=("im04",),
                splits={"train": [f"im{i:02d}" for i in range(8)],
                        "val": ["im08", "im09", "im10"], "test": ["im11", "im12", "im13"]})
    store, loss_file = tmp_path / "store", tmp_path / "loss.json"
    common = ["--dataset", "folder", "--data-root", str(root), "--store", str(store),
              "--model", "mynet:build", "--iterations", "3", "--batch-size", "2",
              "--image-size", "16", "--gpus-per-trial", "0"]
    assert cli_main(["search", *common, "--experiment", "fs", "--steps", "1", "--samples",
                     "2", "--holdout-fraction", "0.25", "--export", str(loss_file), "-q"]) == 0
    rows = ExperimentStore(store).trials("fs")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"}
    assert rows["reward"].between(0, 1).all()
    config = json.loads(rows["config_json"].iloc[0])
    assert config["dataset"] == "folder" and config["num_classes"] == 5
    assert config["model"] == "mynet:build"
    exported = json.loads(loss_file.read_text())
    assert exported["num_classes"] == 5, exported

    assert cli_main(["retrain", *common, "--experiment", "rt", "--loss", "ce", "--loss",
                     f"file:{loss_file}", "--eval-split", "val"]) == 0
    rt = ExperimentStore(store).trials("rt")
    assert len(rt) == 2 and set(rt["status"]) == {"ok"} and rt["miou"].between(0, 1).all()
    ckpt = rt[rt["loss"] == "ce"]["checkpoint"].iloc[0]
    capsys.readouterr()
    assert cli_main(["evaluate", "--checkpoint", ckpt, "--dataset", "folder", "--data-root",
                     str(root), "--split", "test", "--json", "--store", str(store),
                     "--experiment", "ev", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ev = ExperimentStore(store).trials("ev")
    assert len(ev) == 1 and ev["dataset"].iloc[0] == "folder"
    assert ev["miou"].iloc[0] == pytest.approx(metrics["miou"])
    assert 0.0 <= metrics["miou"] <= 1.0


def _camvid_as_folder(camvid: Path, root: Path) -> None:
    """CamVid's SegNet layout as a folder dataset (symlinks; unlabelled 11 as the ignore)."""
    from autoloss_ray.data.camvid import CAMVID_CLASSES

    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CAMVID_CLASSES) + "\n")
    for split in ("train", "val"):
        stems = []
        for image in sorted((camvid / split).glob("*.png")):
            (root / "images" / image.name).symlink_to(image)
            (root / "masks" / image.name).symlink_to(camvid / f"{split}annot" / image.name)
            stems.append(image.stem)
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")


@pytest.mark.slow
def test_camvid_as_a_folder_gives_camvid_items_and_the_same_trial(camvid_root: Path,
                                                                  tmp_path: Path) -> None:
    """Real data, independent reference: CamVid read by the folder dataset (ignore 11) gives
    the built-in CamVid reader's items (ignore 255) and, trained alike, the same metrics."""
    from autoloss_ray.train import run_trial

    root = tmp_path / "camvid-folder"
    _camvid_as_folder(camvid_root, root)
    assert check_folder(root, splits=["train", "val"], ignore_index=11) == {
        "train": 367, "val": 101}
    folder = build_dataset("folder", root=root, split="val", train=False, image_size=32,
                           ignore_index=11, eval_protocol="native")
    camvid = build_dataset("camvid", root=camvid_root, split="val", train=False,
                           image_size=32, eval_protocol="native")
    assert len(folder) == len(camvid) and folder.class_names == camvid.class_names
    for i in (0, 50, 100):
        (xf, yf), (xc, yc) = folder[i], camvid[i]
        assert torch.equal(xf, xc)
        assert torch.equal(torch.where(yf == 11, 255, yf), yc)
    trial = tiny_trial(iterations=3, batch_size=2, train_size=12, holdout_fraction=0.25,
                       loss="ce", seed=1)
    a = run_trial({**trial, "dataset": "folder", "data_root": str(root),
                   "dataset_options": {"ignore_index": 11}})
    b = run_trial({**trial, "dataset": "camvid", "data_root": str(camvid_root)})
    assert a["status"] == b["status"] == "ok" and a["gacc"] > 0.0
    assert (a["num_train"], a["num_eval"], a["num_classes"]) == (9, 3, 11)
    assert (b["num_train"], b["num_eval"]) == (9, 3)
    for key in ("miou", "fwiou", "biou", "bf1", "macc", "gacc"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_mask_values_is_numpy_unique(dtype) -> None:
    from autoloss_ray.data.folder import mask_values

    rng = np.random.default_rng(4)
    mask = rng.choice(np.array([0, 3, 7, 255, 300 if dtype != np.uint8 else 254]),
                      size=(13, 17)).astype(dtype)
    np.testing.assert_array_equal(mask_values(mask), np.unique(mask).astype(np.int64))


def test_a_16_bit_mask_with_more_than_255_classes(tmp_path: Path) -> None:
    classes = tuple(f"c{i}" for i in range(300))
    make_folder(tmp_path / "d", classes=classes[:2], sizes={"a": (6, 9)}, gray=(), palette=())
    (tmp_path / "d" / "classes.txt").write_text("\n".join(classes) + "\n")
    mask = np.full((6, 9), 299, np.uint16)
    mask[0, 0] = 65535
    Image.fromarray(mask).save(tmp_path / "d" / "masks" / "a.png")  # mode I;16
    with pytest.raises(ValueError, match=r"ignore_index 255 is a class id"):
        check_folder(tmp_path / "d")
    assert check_folder(tmp_path / "d", ignore_index=65535) == {"train": 1}
    ds = build_dataset("folder", root=tmp_path / "d", ignore_index=65535, train=False,
                       eval_protocol="native")
    assert ds.num_classes == 300
    np.testing.assert_array_equal(ds[0][1].numpy(), mask.astype(np.int64))


@pytest.mark.parametrize("data_on_device", [False, True])
def test_a_trial_trains_on_the_folder_through_both_data_paths(tmp_path: Path,
                                                             data_on_device: bool) -> None:
    """The DataLoader path (CPU default) and DeviceBatches (the CUDA default, here on the
    CPU) on non-square images of differing sizes, grayscale and palette files included."""
    from autoloss_ray.train import run_trial

    make_folder(tmp_path / "d", splits=SPLITS, ignore=7)
    result = run_trial({"model": "tiny", "dataset": "folder", "data_root": str(tmp_path / "d"),
                        "dataset_options": {"ignore_index": 7}, "image_size": [12, 16],
                        "iterations": 2, "batch_size": 2, "eval_split": "val",
                        "data_on_device": data_on_device, "seed": 2})
    assert result["status"] == "ok", result["error"]
    assert (result["num_train"], result["num_eval"], result["num_classes"]) == (5, 2, 5)
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 < result["gacc"] <= 1.0
