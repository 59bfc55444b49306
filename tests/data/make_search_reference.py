"""Write the search reference files that ``tests/test_search_reference.py`` compares against.

The files were produced by the code *before* the issue-11 move of the search protocol into
``autoloss_ray/search`` (commit febb766 of branch ``redesign``), with::

    git worktree add /tmp/old febb766 && cd /tmp/old && python tests/data/make_search_reference.py

(this script uses only the public API that both the old and the new code have: ``PPO2``'s
``ask``/``tell``/``state_dict`` and the searchers' ``suggest``/``on_trial_complete``/
``get_state``/``set_state``). They hold:

* ``search_reference.json``: for fixed PPO2 runs (seeded draws, a fixed reward function), the
  unconstrained parameters ``z`` after every update as ``float.hex`` strings, so that the new
  update can be checked bit for bit; and, for searcher states saved mid-step, every config the
  restored searcher hands out afterwards and every step record it writes;
* ``searcher_state_v1.pkl``: those searcher states (``get_state()`` pickled, what
  ``Searcher.save`` writes), to check that the new code restores states of the old one.

Rerunning it with the new code must give identical files (``--check`` compares instead of
writing).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

# fixed PPO2 runs: keyword arguments of PPO2; 3 steps each, reward -sum((theta - 0.7)^2)
PPO_CASES = {
    "box_d24_m32": dict(low=[0.0] * 24, high=[1.0] * 24, mu0=[0.5] * 24, samples_per_step=32,
                        seed=0),
    "mixed_bounds": dict(low=[0.0, -np.inf, -np.inf, -1.0, 0.0],
                         high=[np.inf, 1.0, np.inf, 2.0, 1.0],
                         mu0=[0.3, 0.2, 0.0, 1.5, 0.9], samples_per_step=8, seed=5,
                         sigma=0.3),
    "mu_baseline_decay": dict(low=[0.0] * 4, high=[2.0] * 4, mu0=[1.0, 0.2, 1.8, 0.5],
                              samples_per_step=6, seed=11, include_mean=True, baseline="mu",
                              sigma_decay=0.8, sigma_min=0.05, clip_eps=0.1, lr=0.3,
                              update_steps=25),
}
PPO_STEPS = 3


def reward_of(theta) -> float:
    return float(-np.sum((np.asarray(theta, dtype=np.float64) - 0.7) ** 2))


def _hex(values) -> list[str]:
    return [float(v).hex() for v in np.asarray(values, dtype=np.float64).ravel()]


def ppo_reference() -> dict:
    from autoloss_ray.search import PPO2

    out = {}
    for name, kwargs in PPO_CASES.items():
        opt = PPO2(**kwargs)
        steps = []
        for _ in range(PPO_STEPS):
            x = opt.ask()
            opt.tell(x, [reward_of(t) for t in x])
            steps.append({"z": _hex(opt.state_dict()["z"]), "mu": _hex(opt.mu)})
        out[name] = steps
    return out


# searcher states saved mid-step: (class name, keyword arguments)
SEARCHER_CASES = {
    "ppo2": ("PPO2Searcher", dict(metric="loss", mode="min", steps=3, samples_per_step=4,
                                  seed=7, sigma=0.25)),
    "random": ("RandomSearcher", dict(metric="loss", mode="min", steps=3, samples_per_step=4,
                                      seed=7)),
}


def _space():
    from searchers import Box

    return {"a": Box(0.0, 1.0), "b": Box(-1.0, 2.0), "c": Box(0.0, float("inf")), "k": 3}


def _loss(config) -> float:
    return float((config["a"] - 0.3) ** 2 + (config["b"] - 1.2) ** 2 + 0.1 * config["c"])


def _saved_state(cls):
    """Step 0 complete (one trial errored), step 1: two told, one in flight, one not out."""
    s = cls
    cfg = [s.suggest(f"t{i}") for i in range(4)]
    s.on_trial_complete("t0", {"loss": _loss(cfg[0]), "done": True})
    s.on_trial_complete("t1", error=True)
    s.on_trial_complete("t2", {"loss": float("nan"), "done": True})
    s.on_trial_complete("t3", {"loss": _loss(cfg[3]), "done": True})
    cfg = [s.suggest(f"u{i}") for i in range(3)]
    s.on_trial_complete("u0", {"loss": _loss(cfg[0]), "done": True})
    s.on_trial_result("u1", {"loss": 0.5, "done": False})
    s.on_trial_complete("u1", None)  # stopped while paused: its last value, stopped early
    return s.get_state()  # u2 in flight, sample 3 not handed out


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x.hex()
    if isinstance(x, (np.floating,)):
        return float(x).hex()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def continue_search(searcher) -> dict:
    """Drive a restored searcher to the end; everything it hands out and records."""
    configs = []
    searcher.on_trial_complete("u2", {"loss": 0.25, "done": True})
    n = 0
    while not searcher.is_finished:
        out = []
        while True:
            c = searcher.suggest(f"v{n}")
            if not isinstance(c, dict):
                break
            out.append((f"v{n}", c))
            n += 1
        for tid, c in out:
            configs.append(c)
            searcher.on_trial_complete(tid, {"loss": _loss(c), "done": True})
    return {"configs": _jsonable(configs), "history": _jsonable(searcher.history),
            "best_theta": _hex(searcher.best_theta)}


def searcher_reference() -> tuple[dict, dict]:
    import searchers

    states, expected = {}, {}
    for name, (cls_name, kwargs) in SEARCHER_CASES.items():
        cls = getattr(searchers, cls_name)
        states[name] = _saved_state(cls(_space(), **kwargs))
        restored = cls(_space(), **kwargs)
        restored.set_state(pickle.loads(pickle.dumps(states[name])))
        expected[name] = continue_search(restored)
    return states, expected


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="compare with the files, write nothing")
    args = ap.parse_args(argv)
    states, searchers_ref = searcher_reference()
    ref = {"ppo": ppo_reference(), "searchers": searchers_ref}
    if args.check:
        old = json.loads((HERE / "search_reference.json").read_text())
        same = old == json.loads(json.dumps(ref))
        print("identical" if same else "DIFFERENT")
        return 0 if same else 1
    (HERE / "search_reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    with open(HERE / "searcher_state_v1.pkl", "wb") as f:
        pickle.dump(states, f, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
