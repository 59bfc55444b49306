"""Datasets: synthetic scenes, CamVid (shared copy), VOC and Cityscapes (tiny trees built here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoloss_ray.data import DATASETS, build_dataset, holdout_split, subset
from autoloss_ray.data.synthetic import POLE, SYNTHETIC_CLASSES, WIRE
from autoloss_ray.data.transforms import JointTransform
from autoloss_ray.morphology import erode3x3, one_hot_masks


# --------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_per_seed_and_index():
    a = build_dataset("synthetic", image_size=64, length=16, seed=3, train=False)
    b = build_dataset("synthetic", image_size=64, length=16, seed=3, train=False)
    c = build_dataset("synthetic", image_size=64, length=16, seed=4, train=False)
    for i in (5, 0, 15, 5):  # any order
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][1], c[0][1])
    assert not torch.equal(a[0][1], a[1][1])
    # augmented draws are reproducible through (index, draw)
    t = build_dataset("synthetic", image_size=64, length=16, seed=3, train=True)
    assert torch.equal(t[(2, 7)][0], t[(2, 7)][0])
    flips = {bool(torch.equal(t[(2, d)][1], a[2][1])) for d in range(12)}
    assert flips == {True, False}  # some draws flip, some do not
    # val and train splits are different streams
    v = build_dataset("synthetic", split="val", image_size=64, length=16, seed=3, train=False)
    assert not torch.equal(v[0][1], a[0][1])


def test_synthetic_shapes_dtypes_and_values():
    ds = build_dataset("synthetic", image_size=(48, 80), length=4, train=False)
    x, y = ds[1]
    assert x.shape == (3, 48, 80) and x.dtype == torch.float32
    assert y.shape == (48, 80) and y.dtype == torch.int64
    assert -3 < float(x.mean()) < 3 and float(x.std()) > 0.2  # normalised, textured
    values = set(torch.unique(y).tolist())
    assert values <= set(range(len(SYNTHETIC_CLASSES))) | {255}
    assert ds.num_classes == 8 and ds.ignore_index == 255 and len(ds) == 4


def test_synthetic_class_imbalance_and_thin_structures():
    ds = build_dataset("synthetic", image_size=128, length=48, seed=0, train=False)
    labels = torch.stack([ds[i][1] for i in range(len(ds))])
    counts = torch.bincount(labels[labels != 255].flatten(), minlength=8).double()
    share = counts / counts.sum()
    assert (share > 0).all(), "every class appears"
    assert share.max() / share.min() > 50, f"strong imbalance expected, shares {share.tolist()}"
    assert share.max() > 0.3 and share[POLE] < 0.03 and share[WIRE] < 0.03
    assert (labels == 255).any(), "some pixels are unlabelled (ignore)"
    masks = one_hot_masks(labels, 8)  # [N, C, H, W]
    interior = erode3x3(masks).sum(dim=(0, 2, 3)).double() / masks.sum(dim=(0, 2, 3)).double()
    # thin structures have (almost) no interior after a 3x3 erosion; large regions do
    assert interior[POLE] < 0.2 and interior[WIRE] < 0.2, interior.tolist()
    assert interior[0] > 0.8 and interior[1] > 0.8


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="length"):
        build_dataset("synthetic", length=0)
    with pytest.raises(ValueError, match="split"):
        build_dataset("synthetic", split="nope")
    with pytest.raises(ValueError, match="no data root"):
        build_dataset("synthetic", root="/tmp")
    with pytest.raises(ValueError, match="image_size"):
        build_dataset("synthetic", image_size=0)


# --------------------------------------------------------------------------- transforms
def test_joint_transform_keeps_image_and_label_aligned():
    # 8x8 blocks of 16 px: label k, red channel 20 * k (+ an ignore block)
    blocks = np.arange(64).reshape(8, 8) % 7
    blocks[0, 0] = 255
    label = np.kron(blocks, np.ones((16, 16), dtype=np.int64))
    image = np.zeros((128, 128, 3), dtype=np.uint8)
    image[..., 0] = np.where(label == 255, 250, label * 20)
    tf = JointTransform(size=(64, 64), train=True, scale_range=(0.5, 1.5))
    mean, std = 0.485 * 255, 0.229 * 255
    for draw in range(6):
        x, y = tf(image, label, np.random.default_rng(draw))
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        assert set(torch.unique(y).tolist()) <= set(range(7)) | {255}  # nearest: no blends
        red = x[0].numpy() * std + mean
        lab = y.numpy()
        # pixels inside a block (same label in their 5x5 window) must carry that block's red
        pad = np.pad(lab, 2, mode="edge")
        win = np.stack([pad[i : i + 64, j : j + 64] for i in range(5) for j in range(5)])
        inside = (win == lab).all(axis=0) & (lab != 255)
        assert inside.sum() > 20
        agree = np.abs(red[inside] - 20 * lab[inside]) < 6
        assert agree.mean() > 0.98, f"draw {draw}: image and label misaligned"


def test_joint_transform_eval_resizes_whole_scene():
    label = np.zeros((30, 40), dtype=np.int64)
    label[:, 20:] = 1
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    x, y = JointTransform(size=(15, 20), train=False)(image, label, None)
    assert y.shape == (15, 20) and (y[:, :10] == 0).all() and (y[:, 10:] == 1).all()
    with pytest.raises(ValueError, match="same size"):
        JointTransform(size=(8, 8), train=False)(image, label[:10], None)


# --------------------------------------------------------------------------- hold-out
def test_holdout_split_is_seeded_disjoint_and_unaugmented():
    ds = build_dataset("synthetic", image_size=32, length=40, train=True)
    tr, ho = holdout_split(ds, 0.25, seed=1)
    assert len(tr) == 30 and len(ho) == 10
    assert set(tr.indices).isdisjoint(ho.indices)
    assert sorted(tr.indices + ho.indices) == list(range(40))
    tr2, ho2 = holdout_split(ds, 0.25, seed=1)
    assert ho2.indices == ho.indices
    assert holdout_split(ds, 0.25, seed=2)[1].indices != ho.indices
    assert tr.augment and not ho.augment and ho.num_classes == 8
    i = ho.indices[0]
    assert torch.equal(ho[0][1], ds.get(i, augment=False)[1])
    # a subset of a subset maps back to the base dataset
    sub = subset(tr, 10, seed=0)
    assert len(sub) == 10 and set(sub.indices) <= set(tr.indices)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_holdout_split_rejects_bad_fraction(fraction):
    ds = build_dataset("synthetic", image_size=32, length=10)
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(ds, fraction)


def test_holdout_split_rejects_empty_train_part():
    ds = build_dataset("synthetic", image_size=32, length=1)
    with pytest.raises(ValueError, match="no training images"):
        holdout_split(ds, 0.5)


def test_build_dataset_errors(tmp_path):
    assert set(DATASETS) == {"synthetic", "camvid", "voc", "cityscapes", "folder"}
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        build_dataset("imagenet")
    with pytest.raises(ValueError, match="needs root"):
        build_dataset("camvid")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_dataset("camvid", root=tmp_path / "nothing")


# --------------------------------------------------------------------------- CamVid
def test_camvid_loads_with_classes_and_ignore(camvid_root):
    ds = build_dataset("camvid", root=camvid_root, split="val", image_size=(90, 120), train=False)
    assert len(ds) == 101 and ds.num_classes == 11 and ds.ignore_index == 255
    assert ds.class_names[2] == "pole" and ds.class_names[10] == "bicyclist"
    assert len(build_dataset("camvid", root=camvid_root, split="train")) == 367
    x, y = ds[0]
    assert x.shape == (3, 90, 120) and y.shape == (90, 120)
    # full resolution: exactly the raw file with 11 -> 255
    image, label = ds.load_raw(0)
    raw = np.asarray(Image.open(ds.items[0][1]))
    assert image.shape == (360, 480, 3)
    assert np.array_equal(label == 255, raw == 11) and np.array_equal(label[raw != 11], raw[raw != 11])
    seen: set[int] = set()
    for i in range(0, 101, 10):
        seen |= set(np.unique(ds.load_raw(i)[1]).tolist())
    assert 11 not in seen and 255 in seen and seen <= set(range(11)) | {255}


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _camvid_tree(root: Path, names=("a.png", "b.png"), label_value=3) -> None:
    for n in names:
        _png(root / "train" / n, np.zeros((8, 10, 3), np.uint8))
        _png(root / "trainannot" / n, np.full((8, 10), label_value, np.uint8))


def test_camvid_errors(tmp_path):
    _camvid_tree(tmp_path / "ok")
    ds = build_dataset("camvid", root=tmp_path / "ok", image_size=8, train=False)
    assert len(ds) == 2 and (ds[1][1] == 3).all()

    (tmp_path / "noannot" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="trainannot"):
        build_dataset("camvid", root=tmp_path / "noannot")

    _camvid_tree(tmp_path / "pair")
    (tmp_path / "pair" / "trainannot" / "b.png").unlink()
    with pytest.raises(ValueError, match="b.png"):
        build_dataset("camvid", root=tmp_path / "pair")

    _camvid_tree(tmp_path / "bad", label_value=12)
    ds = build_dataset("camvid", root=tmp_path / "bad", image_size=8)
    with pytest.raises(ValueError, match=r"label values \[12\] are outside"):
        ds[0]


# --------------------------------------------------------------------------- VOC
def _voc_palette_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array.astype(np.uint8), mode="P")
    pal = np.random.default_rng(0).integers(0, 255, size=768).astype(np.uint8)
    im.putpalette(pal.tolist())
    im.save(path)


def _voc_tree(base: Path) -> Path:
    voc = base / "VOCdevkit" / "VOC2012"
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}
    for split, names in ids.items():
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, n in enumerate(names):
            (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((12, 16, 3), 100, np.uint8)).save(voc / "JPEGImages" / f"{n}.jpg")
            label = np.zeros((12, 16), np.uint8)
            label[3:9, 4:12] = 15 + k
            label[3, 4:12] = 255  # object border
            _voc_palette_png(voc / "SegmentationClass" / f"{n}.png", label)
    return voc


def test_voc_reads_torchvision_layout(tmp_path):
    _voc_tree(tmp_path)
    for root in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        ds = build_dataset("voc", root=root, split="train", image_size=(12, 16), train=False)
        assert len(ds) == 2 and ds.num_classes == 21 and ds.class_names[15] == "person"
    _, y = ds[1]
    assert set(torch.unique(y).tolist()) == {0, 16, 255}
    assert int((y == 255).sum()) == 8 and int((y == 16).sum()) == 40
    assert len(build_dataset("voc", root=tmp_path, split="val")) == 1


def test_voc_errors(tmp_path):
    voc = _voc_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        build_dataset("voc", root=tmp_path, split="trainval")
    (voc / "SegmentationClass" / "2007_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000002"):
        build_dataset("voc", root=tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="ImageSets"):
        build_dataset("voc", root=tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")


def test_voc_train_aug_with_sbd(tmp_path):
    from scipy.io import savemat

    _voc_tree(tmp_path)
    sbd = tmp_path / "SBD"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    (sbd / "train.txt").write_text("2008_000010\n2007_000003\n")  # 2007_000003 is VOC val
    (sbd / "val.txt").write_text("2008_000011\n")
    for n, k in (("2008_000010", 7), ("2008_000011", 12), ("2007_000003", 1)):
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(sbd / "img" / f"{n}.jpg")
        seg = np.full((10, 10), k, np.uint8)
        savemat(sbd / "cls" / f"{n}.mat", {"GTcls": {"Segmentation": seg}})
    ds = build_dataset("voc", root=tmp_path, split="train_aug", image_size=10, train=False)
    ids = [img.stem for img, _ in ds.items]
    assert ids == ["2007_000001", "2007_000002", "2008_000010", "2008_000011"]  # val excluded
    assert (ds[2][1] == 7).all() and (ds[3][1] == 12).all()
    assert ds.items[0][1].suffix == ".png"  # VOC's own label preferred to SBD's


# --------------------------------------------------------------------------- Cityscapes
def _cityscapes_tree(root: Path, label_ids: np.ndarray) -> None:
    for split, city, stem in (("train", "aachen", "aachen_000000_000019"), ("val", "bonn", "bonn_000001_000019")):
        _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", np.zeros((4, 8, 3), np.uint8))
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids.astype(np.uint8))


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    ids = np.array([[7, 8, 11, 12, 13, 17, 19, 20], [21, 22, 23, 24, 25, 26, 27, 28],
                    [31, 32, 33, 0, 1, 6, 9, 30], [7, 7, 26, 26, 4, 5, 10, 29]])
    _cityscapes_tree(tmp_path, ids)
    ds = build_dataset("cityscapes", root=tmp_path, split="train", image_size=(4, 8), train=False)
    assert len(ds) == 1 and ds.num_classes == 19 and ds.class_names[13] == "car"
    y = ds[0][1].numpy()
    assert y[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert y[1].tolist() == [8, 9, 10, 11, 12, 13, 14, 15]
    assert y[2].tolist() == [16, 17, 18, 255, 255, 255, 255, 255]
    assert y[3].tolist() == [0, 0, 13, 13, 255, 255, 255, 255]
    assert len(build_dataset("cityscapes", root=tmp_path, split="val")) == 1


def test_cityscapes_errors(tmp_path):
    _cityscapes_tree(tmp_path / "bad", np.full((4, 8), 40))
    ds = build_dataset("cityscapes", root=tmp_path / "bad", image_size=4)
    with pytest.raises(ValueError, match="not labelIds"):
        ds[0]
    _cityscapes_tree(tmp_path / "miss", np.full((4, 8), 7))
    for p in (tmp_path / "miss" / "gtFine" / "train").rglob("*.png"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match="aachen_000000_000019_gtFine_labelIds.png"):
        build_dataset("cityscapes", root=tmp_path / "miss")
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        build_dataset("cityscapes", root=tmp_path / "miss", split="test")
