"""Searcher overhead benchmark (not a test).

Measures, in one run:
  1. one PPO2 update (60 Adam steps of the clipped objective) at D, M (goal < 10 ms);
  2. suggest + on_trial_complete overhead per trial of PPO2Searcher / RandomSearcher, driven
     synchronously (no Ray cluster), with and without the amortised PPO update;
  3. trials/s through Ray Tune with a no-op trainable: PPO2Searcher vs Ray's default
     BasicVariantGenerator on the same number of trials and the same concurrency
     (goal: ratio >= 0.9).

Example: python bench/searcher.py --dim 24 --samples 32 --tune-steps 4 --tune-samples 16
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoloss_ray.search import PPO2  # noqa: E402


class _Box:
    def __init__(self, d: int) -> None:
        self.dim, self.low, self.high, self.init = d, np.zeros(d), np.ones(d), np.full(d, 0.5)


def _reward(theta) -> float:
    return float(-np.sum((np.asarray(theta) - 0.7) ** 2))


def bench_update(dim: int, samples: int, repeats: int) -> dict:
    times = []
    for seed in range(repeats):
        opt = PPO2(low=np.zeros(dim), high=np.ones(dim), mu0=np.full(dim, 0.5),
                   samples_per_step=samples, seed=seed)
        x = opt.ask()
        r = [_reward(t) for t in x]
        t0 = time.perf_counter()
        opt.tell(x, r)
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times)}


def bench_protocol(cls, dim: int, samples: int, steps: int, repeats: int) -> dict:
    from searchers import PPO2Searcher  # noqa: F401  (import cost outside the timing)

    per_trial, per_trial_no_update = [], []
    for rep in range(repeats):
        s = cls(_Box(dim), metric="reward", mode="max", steps=steps, samples_per_step=samples,
                seed=rep)
        n = 0
        update_time = 0.0
        t0 = time.perf_counter()
        while True:
            batch = []
            while True:
                cfg = s.suggest(f"t{n}")
                if not isinstance(cfg, dict):
                    break
                batch.append((f"t{n}", cfg))
                n += 1
            if cfg == "FINISHED":
                break
            results = [(tid, {"reward": _reward(c["theta"])}) for tid, c in batch]
            for j, (tid, res) in enumerate(results):
                if j == len(results) - 1:
                    u0 = time.perf_counter()
                    s.on_trial_complete(tid, res)
                    update_time += time.perf_counter() - u0
                else:
                    s.on_trial_complete(tid, res)
        total = time.perf_counter() - t0
        per_trial.append(total / n)
        per_trial_no_update.append((total - update_time) / n)
    return {"us_per_trial": 1e6 * statistics.median(per_trial),
            "us_per_trial_excl_update": 1e6 * statistics.median(per_trial_no_update)}


def _noop(config):
    from ray import tune

    tune.report({"reward": 0.0})


def bench_tune(kind: str, dim: int, samples: int, steps: int, concurrency: int,
               storage: str) -> float:
    from ray import tune

    from searchers import PPO2Searcher

    n = steps * samples
    if kind == "ppo2":
        search_alg = PPO2Searcher(_Box(dim), metric="reward", mode="max", steps=steps,
                                  samples_per_step=samples, seed=0)
        param_space = {"const": 1}
        num_samples = -1
    else:
        search_alg = None  # BasicVariantGenerator
        param_space = {f"x{i}": tune.uniform(0, 1) for i in range(dim)}
        num_samples = n
    tuner = tune.Tuner(
        _noop,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, metric="reward", mode="max",
                                    num_samples=num_samples,
                                    max_concurrent_trials=concurrency or None,
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, name=f"{kind}-{time.time_ns()}",
                                  verbose=0),
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # Tune's banners
        results = tuner.fit()
    wall = time.perf_counter() - t0
    assert len(results) == n, (kind, len(results), n)
    assert not results.errors
    return n / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=24, help="search dimension D (24 = miou bezier)")
    ap.add_argument("--samples", type=int, default=32, help="M for the update/protocol bench")
    ap.add_argument("--steps", type=int, default=12, help="T for the protocol bench")
    ap.add_argument("--repeats", type=int, default=20, help="repeats of the pure benches")
    ap.add_argument("--tune-steps", type=int, default=4, help="T for the Tune throughput bench")
    ap.add_argument("--tune-samples", type=int, default=16, help="M for the Tune bench")
    ap.add_argument("--tune-repeats", type=int, default=2,
                    help="alternating repeats of each Tune run (best taken)")
    ap.add_argument("--concurrency", type=int, default=0,
                    help="max_concurrent_trials for both Tune runs (0 = M)")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--skip-tune", action="store_true", help="only the pure benchmarks")
    args = ap.parse_args(argv)

    from searchers import PPO2Searcher, RandomSearcher

    print(f"# searcher benchmark  D={args.dim} M={args.samples} T={args.steps}")
    up = bench_update(args.dim, args.samples, args.repeats)
    print(f"PPO2 update (60 Adam steps): median {up['median_ms']:.2f} ms, min "
          f"{up['min_ms']:.2f} ms  (goal < 10 ms: {'OK' if up['median_ms'] < 10 else 'MISSED'})")
    for cls in (PPO2Searcher, RandomSearcher):
        pr = bench_protocol(cls, args.dim, args.samples, args.steps, max(3, args.repeats // 4))
        print(f"{cls.__name__}: suggest+on_trial_complete {pr['us_per_trial']:.0f} us/trial "
              f"(incl. amortised update), {pr['us_per_trial_excl_update']:.0f} us/trial "
              "excluding the update")
    if args.skip_tune:
        return 0

    import ray

    conc = args.concurrency or args.tune_samples
    n = args.tune_steps * args.tune_samples
    print(f"# Tune throughput: no-op trainable, {n} trials (T={args.tune_steps}, "
          f"M={args.tune_samples}), max_concurrent_trials={conc}, reuse_actors=True, "
          f"num_cpus={args.num_cpus}")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        best = {"ppo2": 0.0, "basic": 0.0}
        with tempfile.TemporaryDirectory() as storage:
            bench_tune("basic", args.dim, args.tune_samples, 1, conc, storage)  # warm-up
            for _ in range(args.tune_repeats):
                for kind in ("basic", "ppo2"):
                    rate = bench_tune(kind, args.dim, args.tune_samples, args.tune_steps, conc,
                                      storage)
                    print(f"  {kind:6s} {rate:6.2f} trials/s")
                    best[kind] = max(best[kind], rate)
        ratio = best["ppo2"] / best["basic"]
        print(f"PPO2Searcher {best['ppo2']:.2f} trials/s vs BasicVariantGenerator "
              f"{best['basic']:.2f} trials/s: ratio {ratio:.2f}x "
              f"(goal >= 0.9x: {'OK' if ratio >= 0.9 else 'MISSED'})")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
