"""autoloss_ray.search.step_protocol.StepProtocol on its own: no ray, no Tune (a dict space stand-in)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from autoloss_ray.search import PPO2, StepProtocol
from autoloss_ray.search.step_protocol import RECORD_KEYS, SAMPLE_KEY, STEP_KEY


class Space:
    """The duck type the protocol needs: to_config / from_config / names."""

    names = ("a", "b")

    def to_config(self, theta):
        return {"a": float(theta[0]), "b": float(theta[1])}

    def from_config(self, config):
        return np.array([config["a"], config["b"]])


def protocol(**kw) -> StepProtocol:
    p = StepProtocol(steps=2, samples_per_step=3, **kw)
    p.space, p.mode, p.metric = Space(), "min", "loss"
    p.optimizer = PPO2(low=[0, 0], high=[1, 1], mu0=[0.5, 0.5], samples_per_step=3, seed=0)
    return p


def run(p: StepProtocol, values) -> list[dict]:
    """Hand out and tell every sample; values[step][i] (None: the sample errors)."""
    results = []
    for step_values in values:
        ids = [p.hand_out(f"s{p.step}-{i}") for i in range(3)]
        assert ids == [0, 1, 2] and p.hand_out("extra") is None  # the step waits
        step = p.step
        for i, v in enumerate(step_values):
            results.append({"step": step, "sample": i, "config": p.config(step, i),
                            "value": v, "trial_id": f"s{step}-{i}"})
            p.tell(i, f"s{step}-{i}", math.nan if v is None else v,
                   reason="error" if v is None else None)
    return results


def test_protocol_runs_without_ray_and_records_what_it_promises() -> None:
    code = "import sys, autoloss_ray.search.step_protocol; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr
    seen = []
    p = protocol(step_callback=seen.append)
    run(p, [[0.3, None, 0.1], [0.2, 0.4, float("inf")]])
    assert p.finished and [r["step"] for r in seen] == [0, 1]
    assert all(tuple(r) == RECORD_KEYS for r in p.records)
    r0, r1 = p.records
    # min mode: rewards are -values; a failure counts as the worst value seen (the highest)
    assert r0["values"] == [0.3, 0.3, 0.1] and r0["rewards"] == [-0.3, -0.3, -0.1]
    assert r0["fail_reasons"] == [None, "error", None]
    assert r1["values"] == [0.2, 0.4, 0.4] and r1["fail_reasons"][2] == "not finite"
    assert r0["configs"][2][STEP_KEY] == 0 and r0["configs"][2][SAMPLE_KEY] == 2
    assert r0["clip_fraction"] is not None and r0["approx_kl"] >= 0


def test_replay_reproduces_the_run_and_refuses_another() -> None:
    p = protocol()
    results = run(p, [[0.3, None, 0.1], [0.2, 0.4, 0.5]])
    q = protocol()
    assert q.replay(results) == 6 and q.finished
    # the store keeps no fail reason: a replayed failure is "not finite" (as before the move)
    assert [r["fail_reasons"] for r in q.records] == [[None, "not finite", None], [None] * 3]
    strip = [{k: v for k, v in r.items() if k != "fail_reasons"} for r in p.records]
    assert [{k: v for k, v in r.items() if k != "fail_reasons"} for r in q.records] == strip
    other = protocol()
    other.optimizer = PPO2(low=[0, 0], high=[1, 1], mu0=[0.5, 0.5], samples_per_step=3,
                           seed=1)
    with pytest.raises(ValueError, match="resume with the options"):
        other.replay(results)
    with pytest.raises(ValueError, match="fresh"):
        q.replay(results)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="steps"):
        StepProtocol(steps=0, samples_per_step=3)
    with pytest.raises(ValueError, match="samples_per_step"):
        StepProtocol(steps=1, samples_per_step=1)
    with pytest.raises(ValueError, match="failure_reward"):
        StepProtocol(steps=1, samples_per_step=2, failure_reward=float("nan"))
    with pytest.raises(TypeError, match="step_callback"):
        StepProtocol(steps=1, samples_per_step=2, step_callback=3)
