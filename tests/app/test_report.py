"""Report: Table-2-shaped Markdown, search curves and h(x) plots from a store built here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from autoloss_ray.report import (
    answers_with_best_trial,
    best_theta,
    curve_groups,
    plot_curves,
    plot_search_curves,
    results_table,
    retrain_table,
    step_stats,
    write_search_report,
)
from autoloss_ray.store import METRIC_COLUMNS, ExperimentStore


class FakeBezier1:
    """Stand-in parameterization (2 numbers per curve): h(x) = x ** (theta0 + 1 - theta1)."""

    name = "fake"
    dim_per_curve = 2

    def curve(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x ** (theta[0] + 1.0 - theta[1]).clamp_min(0.1)


def fake_get(name: str):
    assert name == "fake"
    return FakeBezier1()


def assert_png(path: str, min_bytes: int = 8_000) -> Image.Image:
    p = Path(path)
    assert p.is_file() and p.stat().st_size > min_bytes, (p, p.stat().st_size)
    img = Image.open(p)
    img.verify()
    img = Image.open(p).convert("RGB")
    assert img.size[0] > 200 and img.size[1] > 150
    arr = np.asarray(img)
    assert arr.std() > 5  # not a blank canvas
    return img


def table_cells(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def retrain_rows() -> pd.DataFrame:
    data = {
        "ce": [78.69, 91.31, 70.61, 65.30, 87.31, 95.17],
        "searched mIoU": [80.97, 92.09, 73.44, 68.86, 88.23, 95.68],
        "searched BIoU": [48.97, 69.89, 79.27, 38.99, 62.64, 81.28],
        "searched BF1": [1.93, 0.96, 7.39, 74.83, 6.51, 2.66],
    }
    rows = []
    for loss, vals in data.items():
        rows.append({"loss": loss, "status": "ok", "kind": "retrain",
                     **{m: v / 100 for m, v in zip(METRIC_COLUMNS, vals)}})
    return pd.DataFrame(rows)


def test_results_table_matches_paper_table2():
    md = results_table(retrain_rows(), label="loss")
    lines = md.strip().splitlines()
    assert lines[0] == "| loss | mIoU | FWIoU | BIoU | BF1 | mAcc | gAcc |"
    cells = table_cells(md)
    assert list(cells) == ["ce", "searched mIoU", "searched BIoU", "searched BF1"]
    assert cells["ce"] == ["78.69", "91.31", "70.61", "65.30", "87.31", "95.17"]
    # best per column in bold: mIoU, FWIoU, mAcc, gAcc -> searched mIoU; BIoU; BF1
    assert cells["searched mIoU"] == ["**80.97**", "**92.09**", "73.44", "68.86", "**88.23**",
                                      "**95.68**"]
    assert cells["searched BIoU"][2] == "**79.27**"
    assert cells["searched BF1"][3] == "**74.83**"
    assert sum(md.count(f"**{x}**") for x in ["80.97", "92.09", "79.27", "74.83", "88.23",
                                               "95.68"]) == 6
    assert md.count("**") == 12


def test_results_table_averages_repeats_and_drops_failures():
    df = pd.DataFrame([
        {"loss": "ce", "status": "ok", **{m: 0.5 for m in METRIC_COLUMNS}},
        {"loss": "ce", "status": "ok", **{m: 0.7 for m in METRIC_COLUMNS}},
        {"loss": "dice", "status": "ok", **{m: 0.55 for m in METRIC_COLUMNS}, "bf1": np.nan},
        {"loss": "dice", "status": "failed", **{m: 0.99 for m in METRIC_COLUMNS}},
    ])
    md = results_table(df, order=["dice", "ce"], decimals=1)
    cells = table_cells(md)
    assert list(cells) == ["dice", "ce"]
    assert md.splitlines()[0].endswith("| runs |")
    assert cells["ce"] == ["**60.0**"] * 3 + ["**60.0**"] + ["**60.0**"] * 2 + ["2"]
    assert cells["dice"] == ["55.0", "55.0", "55.0", "–", "55.0", "55.0", "1"]
    with pytest.raises(ValueError, match="no column 'model'"):
        results_table(df, label="model")
    with pytest.raises(ValueError, match="no rows"):
        results_table(df.assign(status="failed"))
    with pytest.raises(ValueError, match="retrain rows"):
        retrain_table(df.assign(kind="search"))


def test_step_stats_from_trials_and_policy():
    trials = pd.DataFrame({
        "step": [0, 0, 0, 1, 1, 1], "status": ["ok", "ok", "failed", "ok", "nan", "ok"],
        "reward": [0.2, 0.4, 0.9, 0.5, np.nan, 0.7]})
    st = step_stats(trials=trials)
    assert list(st["step"]) == [0, 1] and list(st["n"]) == [3, 3]
    np.testing.assert_allclose(st["mean_reward"], [0.3, 0.6])
    np.testing.assert_allclose(st["max_reward"], [0.4, 0.7])  # the failed 0.9 is not counted
    policy = pd.DataFrame({"step": [1, 0], "rewards": [[0.5, np.nan, 0.7], [0.2, 0.4]]})
    sp = step_stats(policy=policy)
    np.testing.assert_allclose(sp["mean_reward"], [0.3, 0.6])
    np.testing.assert_allclose(sp["max_reward"], [0.4, 0.7])


def test_search_curve_png(tmp_path):
    a = pd.DataFrame({"step": range(6), "mean_reward": np.linspace(0.2, 0.6, 6),
                      "max_reward": np.linspace(0.3, 0.7, 6)})
    b = a.assign(mean_reward=0.3, max_reward=0.5)
    path = plot_search_curves({"PPO2": a, "random": b}, tmp_path / "c.png", title="t")
    assert_png(path)
    with pytest.raises(ValueError):
        plot_search_curves({}, tmp_path / "x.png")


def test_curve_plot_with_stand_in_parameterization(tmp_path):
    groups = curve_groups("miou+biou", 2, 8)
    assert [g[0] for g in groups] == ["miou.and", "miou.or", "biou.and", "biou.or"]
    assert groups[3][1] == slice(6, 8)
    with pytest.raises(ValueError, match="8 expected"):
        curve_groups("miou+biou", 2, 7)
    with pytest.raises(ValueError, match="unknown metric"):
        curve_groups("mlou", 2, 4)
    theta = np.array([0.9, 0.1, 0.5, 0.5])
    path = plot_curves("miou", "fake", theta, tmp_path / "curves.png",
                       get_parameterization=fake_get)
    img = assert_png(path)
    identity = plot_curves("miou", "fake", [0.5, 0.5, 0.5, 0.5], tmp_path / "id.png",
                           get_parameterization=fake_get)
    # a bent curve draws differently from one that lies on the identity
    assert np.abs(np.asarray(img, float) - np.asarray(Image.open(identity).convert("RGB"),
                                                      float)).mean() > 0.5


def test_curve_plot_with_real_parameterizations(tmp_path):
    par = pytest.importorskip("autoloss_ray.losses.parameterizations")
    p = par.get_parameterization("bezier")
    theta = np.concatenate([np.asarray(p.identity_theta, float)] * 2)
    theta[1] = 0.8
    assert_png(plot_curves("miou", "bezier", theta, tmp_path / "b.png"))


def build_store(root: Path) -> ExperimentStore:
    store = ExperimentStore(root)
    rng = np.random.default_rng(0)
    for name, gain in (("ppo", 0.05), ("rand", 0.0)):
        for step in range(4):
            rewards = []
            for s in range(5):
                r = 0.3 + gain * step + 0.02 * s
                status = "failed" if (s == 4 and step == 1) else "ok"
                store.write_trial({
                    "experiment": name, "trial_id": f"{name}_{step}_{s}", "step": step,
                    "sample": s, "metric": "miou", "parameterization": "fake",
                    "theta": (rng.random(4)).tolist(), "status": status,
                    "reward": r if status == "ok" else None,
                    **{m: r for m in METRIC_COLUMNS}})
                rewards.append(r if status == "ok" else float("nan"))
            store.write_policy({"experiment": name, "step": step, "mu": [0.1 * step] * 4,
                                "rewards": rewards, "sigma": 0.2,
                                "searcher": "ppo2" if name == "ppo" else "random"})
    for loss, v in (("ce", 0.5), ("searched", 0.6), ("lovasz", 0.55)):
        store.write_trial({"experiment": "ppo", "trial_id": f"retrain_{loss}", "kind": "retrain",
                           "loss": loss, "status": "ok", "metric": "miou",
                           **{m: v for m in METRIC_COLUMNS}, "miou": v + 0.01})
    return store


def test_write_search_report_from_store(tmp_path):
    store = build_store(tmp_path / "store")
    paths = write_search_report(store, "ppo", tmp_path / "out", compare=["rand"],
                                get_parameterization=fake_get)
    assert set(paths) == {"markdown", "search_curve", "curves"}
    assert_png(paths["search_curve"])
    assert_png(paths["curves"])
    md = Path(paths["markdown"]).read_text()
    assert "trials: 20 (ok 19, failed 1, nan 0); policy steps: 4" in md
    # reward per step rows match the data
    step_rows = re.findall(r"^\| (\d) \| (\d) \| ([\d.]+) \| ([\d.]+) \|$", md, re.M)
    assert [(int(a), int(b)) for a, b, _, _ in step_rows] == [(0, 5), (1, 5), (2, 5), (3, 5)]
    assert float(step_rows[3][3]) == pytest.approx(0.3 + 0.15 + 0.08, abs=1e-4)
    assert float(step_rows[1][2]) == pytest.approx(0.35 + 0.03, abs=1e-4)  # failed one out
    # best step's mu is the plotted theta (PPO rule); Table 2 of the retrain rows
    assert "theta: `0.3000, 0.3000, 0.3000, 0.3000`" in md
    retrain = md.split("## Retrained networks")[1]
    cells = table_cells(retrain.split("\n", 2)[2])
    assert cells["searched"][0] == "**61.00**" and cells["ce"][0] == "51.00"
    assert "best trial: `ppo_3_4`" in md
    with pytest.raises(ValueError, match="not in the store"):
        write_search_report(store, "nope", tmp_path / "o2")


def test_best_theta_rules():
    trials = pd.DataFrame({"status": ["ok", "ok", "failed"], "reward": [0.1, 0.5, 0.9],
                           "theta": [[0.0], [1.0], [2.0]]})
    policy = pd.DataFrame({"step": [0, 1], "mu": [[3.0], [4.0]], "mean_reward": [0.6, 0.2],
                           "searcher": ["ppo2", "ppo2"]})
    assert best_theta(trials, policy).tolist() == [3.0]
    assert best_theta(trials, policy.assign(searcher="random")).tolist() == [1.0]
    for name in ("TPESearcher", "CMAESSearcher"):  # optuna searchers: the best trial too
        assert best_theta(trials, policy.assign(searcher=name)).tolist() == [1.0]
    assert best_theta(trials, None).tolist() == [1.0]
    assert best_theta(trials.iloc[:0], None) is None
    # the explicit rule: the --searcher values and the class names, nothing by substring
    for name in ("random", "RandomSearcher", "tpe", "TPESearcher", "cmaes", "CMAESSearcher",
                 "OptunaSearch"):
        assert answers_with_best_trial(name), name
    for name in ("ppo", "ppo2", "PPO2Searcher", "MyRandomPPO", ""):
        assert not answers_with_best_trial(name), name
