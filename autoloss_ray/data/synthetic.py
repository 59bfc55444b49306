"""Procedural street-like scenes: the default dataset, so that everything runs anywhere.

Each item is drawn from its own generator seeded by ``(seed, split, index)``: the same seed
gives the same scenes in any order, in any worker. A scene has large regions (road, sky,
buildings, trees), small objects (cars, signs) and thin structures (poles 1-2 px wide, wires
about 1 px wide), class-specific textures, per-scene colour jitter and pixel noise, and
sometimes an unlabelled blob (``ignore_index``). Pixel shares are strongly imbalanced
(road/sky/building dominate; poles, wires and signs are around 1% each), so that mIoU,
global accuracy and the boundary metrics disagree, as on real road scenes.
"""

from __future__ import annotations

import numpy as np

from autoloss_ray.data.base import SegmentationDataset

__all__ = ["SyntheticScenes", "SYNTHETIC_CLASSES"]

SYNTHETIC_CLASSES = ("road", "sky", "building", "tree", "car", "pole", "wire", "sign")
ROAD, SKY, BUILDING, TREE, CAR, POLE, WIRE, SIGN = range(8)

_SPLITS = {"train": 0, "val": 1, "test": 2}

# Base colours (RGB) per class; poles are close to buildings and wires to the sky's shadow,
# so the thin classes are not separable by colour alone.
_COLORS = np.array(
    [
        [90, 90, 95],  # road
        [150, 185, 230],  # sky
        [150, 120, 100],  # building
        [60, 120, 50],  # tree
        [180, 40, 40],  # car (hue re-drawn per car)
        [125, 115, 105],  # pole
        [70, 70, 80],  # wire
        [30, 70, 200],  # sign
    ],
    dtype=np.float32,
)


class SyntheticScenes(SegmentationDataset):
    """``length`` procedural scenes of ``image_size``; see the module docstring.

    ``split`` ("train", "val", "test") picks an independent stream of scenes.
    """

    name = "synthetic"
    num_classes = len(SYNTHETIC_CLASSES)
    class_names = SYNTHETIC_CLASSES
    ignore_index = 255

    def __init__(
        self,
        *,
        split: str = "train",
        length: int = 512,
        image_size: int | tuple[int, int] = 128,
        train: bool = True,
        seed: int = 0,
        noise: float = 8.0,
        ignore_prob: float = 0.3,
        scale_range: tuple[float, float] = (1.0, 1.0),
        flip_prob: float = 0.5,
        eval_protocol: str = "train_size",
        inference_size: str | tuple[int, int] | None = None,
    ) -> None:
        super().__init__(
            image_size=image_size,
            train=train,
            seed=seed,
            scale_range=scale_range,
            flip_prob=flip_prob,
            eval_protocol=eval_protocol,
            inference_size=inference_size,
        )
        if split not in _SPLITS:
            raise ValueError(f"synthetic split must be one of {sorted(_SPLITS)}, got {split!r}")
        if int(length) < 1:
            raise ValueError(f"synthetic length must be >= 1, got {length}")
        self.split = split
        self.length = int(length)
        self.noise = float(noise)
        self.ignore_prob = float(ignore_prob)

    def __len__(self) -> int:
        return self.length

    def describe(self, index: int) -> str:
        return f"synthetic {self.split} scene {index}"

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 7919 + _SPLITS[self.split], index])
        return render_scene(rng, self.image_size, noise=self.noise, ignore_prob=self.ignore_prob)


def render_scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    noise: float = 8.0,
    ignore_prob: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (uint8 image [H, W, 3], uint8 label [H, W]) drawn from ``rng``."""
    H, W = size
    s = min(H, W) / 128.0  # thin structures keep their pixel width; objects scale
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    label = np.full((H, W), ROAD, dtype=np.uint8)
    colors = np.clip(_COLORS + rng.normal(0, 12, size=_COLORS.shape), 0, 255)

    # Horizon (slightly tilted): sky above, road below.
    horizon = rng.uniform(0.3, 0.55) * H + rng.uniform(-0.08, 0.08) * (xx - W / 2)
    label[yy < horizon] = SKY
    h_mid = float(horizon[:, W // 2].mean()) if W > 0 else 0.0

    # Buildings: rectangles standing on the horizon.
    for _ in range(int(rng.integers(1, 5))):
        x0 = rng.uniform(-0.1, 0.9) * W
        bw = rng.uniform(0.12, 0.35) * W
        top = rng.uniform(0.05, 0.8) * h_mid
        bottom = h_mid + rng.uniform(0.0, 0.06) * H
        label[(xx >= x0) & (xx < x0 + bw) & (yy >= top) & (yy < bottom)] = BUILDING

    # Trees: ellipses around the horizon.
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, W), h_mid + rng.uniform(-0.2, 0.05) * H
        rx, ry = rng.uniform(0.05, 0.14) * W, rng.uniform(0.06, 0.16) * H
        label[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1] = TREE

    # Cars: small boxes on the road, each with its own hue.
    car_colors = []
    for _ in range(int(rng.integers(0, 4))):
        cy = rng.uniform(h_mid + 0.05 * H, 0.95 * H)
        depth = (cy - h_mid) / max(H - h_mid, 1.0)  # nearer -> bigger
        cw, ch = (0.06 + 0.12 * depth) * W, (0.04 + 0.08 * depth) * H
        cx = rng.uniform(0, W - cw)
        mask = (xx >= cx) & (xx < cx + cw) & (yy >= cy - ch) & (yy < cy)
        label[mask] = CAR
        car_colors.append((mask, np.clip(rng.uniform(20, 235, size=3), 0, 255)))

    # Wires: ~1 px lines across the upper half.
    for _ in range(int(rng.integers(0, 3))):
        y0, y1 = rng.uniform(0.05, 0.6) * h_mid, rng.uniform(0.05, 0.6) * h_mid
        dist = np.abs((y1 - y0) * xx / max(W - 1, 1) + y0 - yy) / np.sqrt(
            1 + ((y1 - y0) / max(W - 1, 1)) ** 2
        )
        label[dist < rng.uniform(0.5, 0.8)] = WIRE

    # Poles: 1-2 px wide verticals from the sky down past the horizon, signs on some.
    for _ in range(int(rng.integers(1, 4))):
        x0 = float(rng.integers(0, W))
        width = int(rng.integers(1, 3))
        top = rng.uniform(0.05, 0.6) * h_mid
        bottom = min(h_mid + rng.uniform(0.05, 0.3) * H, H)
        label[(xx >= x0) & (xx < x0 + width) & (yy >= top) & (yy < bottom)] = POLE
        if rng.random() < 0.5:
            half = max(1.0, rng.uniform(1.5, 3.0) * s)
            cy = top + half
            label[(np.abs(xx - x0 - width / 2) <= half) & (np.abs(yy - cy) <= half)] = SIGN

    # Paint: class colour, then class texture.
    image = colors[label.astype(np.int64)].astype(np.float32)
    for mask, c in car_colors:
        image[mask & (label == CAR)] = c
    sky = label == SKY
    image[sky] += (yy[sky, None] / max(H, 1)) * np.array([-40, -30, -10], dtype=np.float32)
    bld = label == BUILDING
    period = max(3, int(round(rng.uniform(4, 8) * s)))
    windows = ((yy.astype(np.int64) // period) % 2 == 0) & ((xx.astype(np.int64) // period) % 2 == 0)
    image[bld & windows] *= 0.7
    tree = label == TREE
    image[tree] += rng.normal(0, 25, size=(int(tree.sum()), 1))
    road = label == ROAD
    image[road] += rng.normal(0, 6, size=(int(road.sum()), 1))

    # Unlabelled blob (ignore), then global brightness and pixel noise.
    if rng.random() < ignore_prob:
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        r = rng.uniform(0.03, 0.08) * min(H, W)
        blob = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        label[blob] = 255
        image[blob] = rng.uniform(0, 255, size=3)
    image *= rng.uniform(0.75, 1.2)
    image += rng.normal(0, noise, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label
