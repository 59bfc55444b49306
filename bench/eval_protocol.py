"""Cost of the two ways a proxy trial scores its hold-out reward (no Ray).

For each proxy (the demo recipe on synthetic data; the README's CamVid search at 96x96),
runs one trial per protocol with the same seed and prints the evaluation seconds
(``eval_seconds``: the hold-out forward passes plus the metrics) and the reward:

    native      every hold-out label map at its own resolution (CamVid: 360x480), the argmax
                of the logits upsampled bilinearly to it (the model sees the image at the
                training scale, aspect kept: 96x128)
    train_size  image and label resized to the training size (96x96; labels by nearest)

Training is identical for both (same seed), so the rewards differ only by the protocol.

    .venv/bin/python bench/eval_protocol.py [--camvid ../shared/data/camvid] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from autoloss_ray.train import TrialConfig, build_data, evaluate_model


def proxies(camvid: str | None) -> dict[str, dict]:
    out = {
        "synthetic (demo recipe)": dict(
            dataset="synthetic", model="tiny", image_size=64, iterations=60, batch_size=8,
            train_size=192, holdout_fraction=0.25, metric="miou",
        ),
    }
    if camvid and os.path.isdir(camvid):
        out["CamVid (README search)"] = dict(
            dataset="camvid", data_root=os.path.abspath(camvid), model="tiny", image_size=96,
            iterations=80, batch_size=8, holdout_fraction=0.25, metric="miou",
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--camvid", default="../shared/data/camvid")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a Ray trial with 1 CPU
    print(f"torch threads 1, {args.repeats} repeats, median seconds")
    print("| proxy | hold-out images | protocol | eval seconds | mIoU | BF1 |")
    print("|---|---|---|---|---|---|")
    for name, config in proxies(args.camvid).items():
        # one model, trained as the proxy trial trains it (cross entropy), scored both ways
        cfg = TrialConfig.from_mapping({**config, "loss": "ce", "eval_protocol": "native"})
        trained = _train(cfg)
        for protocol in ("native", "train_size"):
            pcfg = TrialConfig.from_mapping({**config, "loss": "ce", "eval_protocol": protocol})
            _, eval_set = build_data(pcfg)
            times, metrics = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                metrics = evaluate_model(trained, eval_set, num_classes=eval_set.num_classes,
                                         ignore_index=eval_set.ignore_index, batch_size=8)
                times.append(time.perf_counter() - start)
            print(f"| {name} | {len(eval_set)} | {protocol} | {statistics.median(times):.2f} | "
                  f"{100 * metrics['miou']:.2f} | {100 * metrics['bf1']:.2f} |", flush=True)


def _train(cfg: TrialConfig) -> torch.nn.Module:
    """The trial's model after its training (run_trial with save_checkpoint, reloaded)."""
    import tempfile

    from autoloss_ray.checkpoint import load_checkpoint
    from autoloss_ray.train import run_trial

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.pt")
        result = run_trial({**_asdict(cfg), "save_checkpoint": path})
        assert result["status"] == "ok", result
        model, _ = load_checkpoint(path)
    return model


def _asdict(cfg: TrialConfig) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(cfg).items() if v is not None}


if __name__ == "__main__":
    main()
