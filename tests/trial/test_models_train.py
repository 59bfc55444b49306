"""Proxy models and the framework-free training loop (no Ray)."""

from __future__ import annotations

import math

import pytest
import torch

from autoloss_ray.models import MODELS, build_model, load_backbone_weights, param_groups
from autoloss_ray.train import METRIC_KEYS, TrialConfig, run_trial
from tests.tiny import tiny_trial

# The demo-sized proxy task: tiny model, 64x64, a few dozen iterations (seconds on CPU).
SMALL = tiny_trial(image_size=64, batch_size=8, train_size=96, holdout_fraction=0.25,
                   iterations=40, lr=0.05, seed=0, device="cpu")


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_return_logits_at_input_size(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 48))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, 64, 48)
    groups = param_groups(model, 0.02, 10.0)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(0.02) and groups[1]["lr"] == pytest.approx(0.2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_torchvision_models_have_no_aux_head():
    model = build_model("deeplabv3_resnet50", num_classes=3)
    assert model.net.aux_classifier is None


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model 'unet'"):
        build_model("unet", num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("tiny", num_classes=1)


def test_backbone_weights_from_local_file(tmp_path):
    torch.manual_seed(1)
    src = build_model("tiny", num_classes=4)
    path = tmp_path / "tiny_backbone.pt"
    # a segmentation checkpoint: "backbone." prefixes and head keys that must be ignored
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.backbone.state_dict().items()}
                | {"classifier.out.weight": torch.zeros(1)}}, path)
    torch.manual_seed(2)
    dst = build_model("tiny", num_classes=4, backbone_weights=path)
    for (k, a), b in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().values()):
        assert torch.equal(a, b), k
    assert not torch.equal(src.classifier["out"].weight, dst.classifier["out"].weight)


def test_backbone_weights_from_a_classification_checkpoint(tmp_path):
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(0)
    cls = mobilenet_v3_large(weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(cls.state_dict(), path)  # keys "features.N...." plus "classifier.*"
    model = build_model("lraspp_mobilenet_v3_large", num_classes=3, backbone_weights=str(path))
    n = sum(1 for _ in model.backbone.state_dict())
    assert n > 100
    assert torch.equal(model.backbone["0"][0].weight, cls.features[0][0].weight)


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("tiny", num_classes=3, backbone_weights=tmp_path / "none.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        build_model("tiny", num_classes=3, backbone_weights=garbage)
    from autoloss_ray.models import TinySegNet

    narrow = tmp_path / "narrow.pt"
    torch.save(TinySegNet(3, width=8).backbone.state_dict(), narrow)
    with pytest.raises(ValueError, match="wrong shape"):
        build_model("tiny", num_classes=3, backbone_weights=narrow)
    partial = tmp_path / "partial.pt"
    torch.save({"stem.0.weight": torch.zeros(24, 3, 3, 3)}, partial)
    with pytest.raises(ValueError, match="missing"):
        load_backbone_weights(build_model("tiny", num_classes=3), partial)


# --------------------------------------------------------------------------- config
def test_trial_config_defaults_are_the_paper_recipe():
    cfg = TrialConfig()
    assert (cfg.iterations, cfg.batch_size, cfg.image_size) == (1000, 32, 128)
    assert (cfg.lr, cfg.poly_power, cfg.min_lr, cfg.momentum) == (0.02, 0.9, 1e-4, 0.9)
    assert (cfg.weight_decay, cfg.head_lr_mult, cfg.dataset) == (5e-4, 10.0, "synthetic")
    with pytest.raises(TypeError):
        TrialConfig("miou")  # keyword-only


def test_trial_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown trial config key\(s\) \['batchsize', 'zzz'\]"):
        TrialConfig.from_mapping({"batchsize": 4, "zzz": 1, "metric": "miou"})
    cfg = TrialConfig.from_mapping(
        {"__trial_index__": 3, "search_step": 2, "search_sample": 5, "model": None}
    )
    assert cfg.search_step == 2 and cfg.model == "lraspp_mobilenet_v3_large"
    with pytest.raises(ValueError, match="iterations"):
        TrialConfig.from_mapping({"iterations": 0})
    with pytest.raises(ValueError, match="holdout_fraction"):
        TrialConfig.from_mapping({"holdout_fraction": 1.0})
    with pytest.raises(ValueError, match="lr"):
        TrialConfig.from_mapping({"lr": float("nan")})


def test_run_trial_bad_input_fails_before_compute(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        run_trial({**SMALL, "dataset": "mnist"})
    with pytest.raises(ValueError, match="no training images"):
        run_trial({**SMALL, "train_size": 1, "holdout_fraction": 0.5})
    with pytest.raises(ValueError, match="num_classes 5 does not match"):
        run_trial({**SMALL, "num_classes": 5})
    with pytest.raises(ValueError, match="unknown model"):
        run_trial({**SMALL, "model": "resnet"})
    with pytest.raises(ValueError):
        run_trial({**SMALL, "metric": "accuracy"})
    with pytest.raises(ValueError):
        run_trial({**SMALL, "loss": "no-such-loss"})
    with pytest.raises(FileNotFoundError):
        run_trial({**SMALL, "dataset": "camvid", "data_root": str(tmp_path)})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_trial({**SMALL, "device": "cuda"})


# --------------------------------------------------------------------------- training
def _constant_prediction_reward(metric: str) -> float:
    """The metric of predicting the hold-out's most frequent class everywhere."""
    from autoloss_ray.metrics import evaluate
    from autoloss_ray.train import build_data

    _, holdout = build_data(TrialConfig.from_mapping(SMALL))
    labels = torch.stack([holdout[i][1] for i in range(len(holdout))])
    majority = int(torch.bincount(labels[labels != 255]).argmax())
    return evaluate(torch.full_like(labels, majority), labels, holdout.num_classes)[metric]


@pytest.mark.slow
def test_training_lowers_the_loss_and_beats_a_constant_prediction():
    result = run_trial(SMALL)
    assert result["status"] == "ok" and result["error"] is None
    assert result["iterations"] == 40 and result["device"] == "cpu"
    assert set(METRIC_KEYS) <= set(result)
    assert all(0.0 <= result[k] <= 1.0 for k in METRIC_KEYS)
    assert result["reward"] == pytest.approx(result["miou"])
    assert result["final_loss"] < 0.8 * result["initial_loss"]
    baseline = _constant_prediction_reward("miou")
    assert result["miou"] > baseline + 0.1, (result["miou"], baseline)
    assert result["num_train"] == 72 and result["num_eval"] == 24
    assert result["train_seconds"] > 0 and result["images_per_second"] > 0


def test_same_seed_same_metrics_different_seed_differs():
    # three trials; determinism needs no size: 32-pixel crops, batches of 4
    cfg = {**SMALL, "iterations": 6, "train_size": 32, "image_size": 32, "batch_size": 4}
    a, b = run_trial(cfg), run_trial(cfg)
    c = run_trial({**cfg, "seed": 1})
    for k in (*METRIC_KEYS, "final_loss", "initial_loss"):
        assert a[k] == b[k], k
    assert a["final_loss"] != c["final_loss"]


@pytest.mark.parametrize("loss", ["ce", "wce"])
def test_metric_sum_reward_and_baseline_loss(loss):
    result = run_trial(
        {**SMALL, "iterations": 4, "train_size": 32, "metric": "miou+biou", "loss": loss}
    )
    assert result["status"] == "ok"
    assert result["reward"] == pytest.approx(result["miou"] + result["biou"])


def test_surrogate_theta_from_search_space_is_accepted():
    from autoloss_ray.losses import search_space

    space = search_space("biou", "bezier")
    result = run_trial(
        {**SMALL, "iterations": 3, "train_size": 32, "metric": "biou",
         "theta": [float(v) for v in space.init]}
    )
    assert result["status"] == "ok" and result["reward"] == pytest.approx(result["biou"])
    with pytest.raises(ValueError):
        run_trial({**SMALL, "iterations": 3, "theta": [0.5] * (space.dim + 1)})


def test_diverging_loss_is_recorded_as_nan_not_raised():
    result = run_trial({**SMALL, "iterations": 30, "train_size": 32, "lr": 1e12})
    assert result["status"] == "nan"
    assert "iteration" in result["error"] or "non-finite" in result["error"]
    assert math.isnan(result["reward"]) and all(math.isnan(result[k]) for k in METRIC_KEYS)
    assert result["iterations"] < 30


def test_progress_callback_and_eval_split():
    rows = []
    result = run_trial(
        {**SMALL, "iterations": 4, "train_size": 16, "progress_every": 2, "eval_split": "val",
         "dataset_options": {"length": 16}},
        progress=rows.append,
    )
    assert [r["iteration"] for r in rows] == [2, 4]
    assert rows[1]["lr"] < rows[0]["lr"]  # poly decay
    assert result["num_train"] == 16 and result["num_eval"] == 16  # whole split, val split
