"""Cost of the two ways a proxy trial scores its hold-out reward (no Ray), side by side.

For each proxy (the demo recipe on synthetic data; the README's CamVid search at 96x96),
trains one model (the proxy trial's own training, cross entropy) and scores it with
``evaluate_model`` under both protocols, the repeats interleaved (native, train_size,
native, ...) so that drift and background load hit both alike:

    native      every hold-out label map at its own resolution (CamVid: 360x480), the argmax
                of the logits upsampled bilinearly to it (the model sees the image at the
                training scale, aspect kept: 96x128)
    train_size  image and label resized to the training size (96x96; labels by nearest)

It prints the evaluation seconds of each run, the median, the median CPU time of the process
(with 1 thread all of the evaluation's work; steadier than the wall clock on a machine that
something else loads), the metrics, then where the time
goes: one more pass per protocol with the evaluator's own pieces timed one at a time (data:
decoding, label check, resize, normalise, collate; forward; upsample: the class map of the
logits upsampled to the label, ``_upsampled_classes``: the fused kernel on CPU; argmax:
the class map when no upsample is needed (train_size); metrics: ``MetricAccumulator.update``,
the label check and the confusion and boundary counts). Last, per proxy,
``native/train_size: X.XXx`` (median over median, wall clock) and the same ratio in CPU
time, then the goal line of issue 31 (<= 1.5x on the CamVid hold-out, wall clock).

    .venv/bin/python bench/eval_protocol.py [--camvid ../shared/data/camvid] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from autoloss_ray.train import TrialConfig, build_data, evaluate_model  # noqa: E402

GOAL = 1.5
PROTOCOLS = ("native", "train_size")


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--camvid", default="../shared/data/camvid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=None,
                        help="override the proxies' training iterations (smoke runs)")
    parser.add_argument("--only", choices=["synthetic", "camvid"], default=None,
                        help="run one proxy")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as in a Ray trial with 1 CPU)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.repeats < 1:
        print("eval_protocol.py: error: --repeats must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"bench/eval_protocol.py: {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {args.repeats} interleaved repeats, "
          "median seconds")
    ratios = {}
    for name, config in proxies(args.camvid).items():
        if args.only and not name.lower().startswith(args.only):
            continue
        if args.iterations:
            config = {**config, "iterations": args.iterations}
        # one model, trained as the proxy trial trains it (cross entropy), scored both ways
        cfg = TrialConfig.from_mapping({**config, "loss": "ce", "eval_protocol": "native"})
        trained = _train(cfg)
        sets = {p: build_data(TrialConfig.from_mapping(
            {**config, "loss": "ce", "eval_protocol": p}))[1] for p in PROTOCOLS}
        times = {p: [] for p in PROTOCOLS}
        cpu = {p: [] for p in PROTOCOLS}
        metrics = {}
        for _ in range(args.repeats):
            for p in PROTOCOLS:
                start, start_cpu = time.perf_counter(), time.process_time()
                metrics[p] = evaluate_model(trained, sets[p], num_classes=sets[p].num_classes,
                                            ignore_index=sets[p].ignore_index, batch_size=8)
                times[p].append(time.perf_counter() - start)
                cpu[p].append(time.process_time() - start_cpu)
        print(f"\n[{name}] {len(sets['native'])} hold-out images")
        print("| protocol | eval seconds (median) | runs | CPU seconds (median) | mIoU | BF1 |")
        print("|---|---|---|---|---|---|")
        for p in PROTOCOLS:
            print(f"| {p} | {statistics.median(times[p]):.2f} | "
                  f"{', '.join(f'{t:.2f}' for t in times[p])} | "
                  f"{statistics.median(cpu[p]):.2f} | "
                  f"{100 * metrics[p]['miou']:.2f} | {100 * metrics[p]['bf1']:.2f} |")
        for p in PROTOCOLS:
            ph = phases(trained, sets[p])
            total = sum(ph.values())
            print(f"  phases ({p}): " + ", ".join(
                f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in ph.items())
                + f"; sum {total:.2f} s")
        ratio = statistics.median(times["native"]) / statistics.median(times["train_size"])
        ratios[name] = ratio
        print(f"  native/train_size: {ratio:.2f}x")
        print(f"  native/train_size in CPU time: "
              f"{statistics.median(cpu['native']) / statistics.median(cpu['train_size']):.2f}x")
    camvid = [r for n, r in ratios.items() if n.startswith("CamVid")]
    if camvid:
        r = camvid[0]
        print(f"\nnative/train_size: {r:.2f}x on the CamVid hold-out "
              f"(goal <= {GOAL}x: {'met' if r <= GOAL else 'MISSED'})")
    else:
        print(f"\n(no CamVid folder: the goal, <= {GOAL}x on the CamVid hold-out, not measured)")
    return 0


def phases(model: torch.nn.Module, dataset, batch_size: int = 8) -> dict[str, float]:
    """One evaluation of ``model`` on ``dataset`` with the evaluator's pieces (its loader and
    collate, the forward, the upsample, the argmax, the metric accumulator) timed one at a
    time, in seconds. CPU only (no device waits)."""
    from autoloss_ray.metrics import MetricAccumulator
    from autoloss_ray.trial.evaluation import _eval_loader, _upsampled_classes

    t = dict.fromkeys(("data", "forward", "upsample", "argmax", "metrics"), 0.0)
    acc = MetricAccumulator(dataset.num_classes, ignore_index=dataset.ignore_index,
                            boundary_tolerance=5, device="cpu")
    loader = _eval_loader(dataset, batch_size)
    model.eval()
    with torch.no_grad():
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                groups = next(it)
            except StopIteration:
                break
            t["data"] += time.perf_counter() - t0
            for images, labels in groups:
                t0 = time.perf_counter()
                if labels.dtype == torch.uint8:
                    labels = labels.long()
                t["data"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                logits = model(images)
                t1 = time.perf_counter()
                pred = _upsampled_classes(logits, labels.shape[-2:])
                t2 = time.perf_counter()
                acc.update(pred, labels)
                t3 = time.perf_counter()
                step = "upsample" if logits.shape[-2:] != labels.shape[-2:] else "argmax"
                for k, a, b in (("forward", t0, t1), (step, t1, t2), ("metrics", t2, t3)):
                    t[k] += b - a
    return t


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
    sys.exit(main())
