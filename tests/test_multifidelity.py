"""Multi-fidelity (issue 29.4): rung reporting of the proxy trial, stopped samples in the
step protocol and PPO2 (ranked below every survivor), and ``autoloss search --scheduler asha``
end to end on the embedded Ray."""

from __future__ import annotations

import pytest

from autoloss_ray.train import run_trial

TINY = dict(dataset="synthetic", model="tiny", train_size=24, image_size=32, iterations=12,
            batch_size=4, seed=3, device="cpu")


def test_rungs_report_and_leave_the_final_result_unchanged():
    rows: list[dict] = []
    plain = run_trial(TINY)
    with_rungs = run_trial({**TINY, "rungs": [4, 8]}, progress=rows.append)
    # a rung restores every random state: the same seed trains to the same final result
    for key in ("reward", "miou", "bf1", "final_loss", "initial_loss", "iterations"):
        assert with_rungs[key] == plain[key], key
    assert [r["rung_iteration"] for r in rows] == [4, 8]
    for r in rows:
        assert r["reward"] == r["rung_reward"] == r["miou"]
        assert 0.0 <= r["reward"] <= 1.0
    assert with_rungs["rung_seconds"] > 0.0 and "rung_seconds" not in plain
    assert rows[1]["miou"] != rows[0]["miou"]  # scored after different training


@pytest.mark.parametrize("rungs, match", [
    ([0, 4], r"ints in \[1, 12\)"),
    ([4, 12], r"ints in \[1, 12\)"),
    ([8, 4], "strictly increasing"),
    ([4, 4], "strictly increasing"),
    ("4,8", "list of iterations"),
    ([4.0], r"ints in \[1, 12\)"),
])
def test_bad_rungs_are_one_line_errors(rungs, match):
    from autoloss_ray.train import check_trial_config

    with pytest.raises(ValueError, match=match):
        check_trial_config({**TINY, "rungs": rungs})
