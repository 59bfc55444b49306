"""autoloss_ray.integrations.mmseg: the searched loss as mmseg's ``type="AutoSegLoss"``.

Built through mmengine's registry (the root one and an mmseg-like child registry), its value
and gradient must equal the plain SurrogateLoss times ``loss_weight``; the call's
``ignore_index`` and 0/1 pixel weights must mean what they mean in mmseg; bad configs get one
clear error each. Needs mmengine only (the ``mmseg`` extra; in the ``test`` extra).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.registry import MODELS, Registry

import autoloss_ray.integrations.mmseg as mmseg_integration
from autoloss_ray import SurrogateLoss
from autoloss_ray.integrations.mmseg import AutoSegLoss

C = 5


def _batch(seed: int = 0, *, n: int = 2, h: int = 12, w: int = 16):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (n, h, w), generator=g)
    labels[:, :2, :3] = 255
    return logits, labels


def _random_theta(metric: str, seed: int) -> np.ndarray:
    """An admissible theta away from the identity start (in the box [low, high])."""
    space = SurrogateLoss(metric, num_classes=C).space
    step = np.random.default_rng(seed).uniform(-0.3, 0.3, space.dim)
    return np.clip(space.init + step, space.low, space.high)


def test_importing_the_library_does_not_import_mmengine() -> None:
    """... and the integration itself (a library module) does not import ray."""
    code = ("import sys, autoloss_ray, autoloss_ray.integrations; "
            "from autoloss_ray import SurrogateLoss; "
            "print('mmengine' in sys.modules); "
            "import autoloss_ray.integrations.mmseg; "
            "print('mmengine' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["False", "True False"], out.stdout


@pytest.mark.parametrize("registry", ["root", "mmseg_child"])
def test_registry_build_equals_the_plain_loss_times_weight(registry: str) -> None:
    reg = MODELS if registry == "root" else Registry("model", parent=MODELS, scope="mmseg")
    loss = reg.build(dict(type="AutoSegLoss", preset="miou", num_classes=C, loss_weight=0.4))
    assert isinstance(loss, AutoSegLoss)
    assert loss.loss_name == "loss_autoseg" and loss.loss_weight == 0.4
    logits, labels = _batch()
    ref = SurrogateLoss.from_preset("miou", num_classes=C)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = loss(a, labels, weight=None, ignore_index=255)
    want = 0.4 * ref(b, labels)
    assert got.dim() == 0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)
    assert float(a.grad.abs().sum()) > 0


def test_loss_file_theta_and_class_count(tmp_path) -> None:
    theta = _random_theta("miou+biou", 3)
    path = tmp_path / "searched.json"
    SurrogateLoss("miou+biou", num_classes=21, theta=theta).to_file(path)
    logits, labels = _batch(1)
    # the file's class count is overridden by the config's
    loss = MODELS.build(dict(type="AutoSegLoss", metric="miou+biou", loss_file=str(path),
                             num_classes=C, loss_weight=2.0, loss_name="loss_searched"))
    ref = SurrogateLoss("miou+biou", num_classes=C, theta=theta)
    assert loss.loss_name == "loss_searched"
    np.testing.assert_allclose(loss.loss.theta, theta)
    torch.testing.assert_close(loss(logits, labels), 2.0 * ref(logits, labels), rtol=0,
                               atol=1e-12)
    # without num_classes the file's 21 classes stay
    assert MODELS.build(dict(type="AutoSegLoss", loss_file=str(path))).loss.num_classes == 21
    # explicit theta, no file
    direct = MODELS.build(dict(type="AutoSegLoss", metric="miou+biou", theta=list(theta),
                               num_classes=C))
    torch.testing.assert_close(direct(logits, labels), ref(logits, labels), rtol=0,
                               atol=1e-12)


def test_metric_alone_is_the_identity_relaxation() -> None:
    logits, labels = _batch(2)
    loss = MODELS.build(dict(type="AutoSegLoss", metric="macc", num_classes=C,
                             boundary_tolerance=2))
    torch.testing.assert_close(loss(logits, labels),
                               SurrogateLoss("macc", num_classes=C)(logits, labels))


def test_the_calls_ignore_index_is_used() -> None:
    loss = MODELS.build(dict(type="AutoSegLoss", preset="miou", num_classes=C))
    logits, labels = _batch(4)
    want = loss(logits, labels, ignore_index=255)
    other = torch.where(labels == 255, torch.full_like(labels, -100), labels)
    torch.testing.assert_close(loss(logits, other, ignore_index=-100), want)
    # 255 is not a class and not the call's ignore index: the loss says so
    with pytest.raises(ValueError, match="255"):
        loss(logits, labels, ignore_index=-100)


def test_zero_weights_leave_pixels_out() -> None:
    loss = MODELS.build(dict(type="AutoSegLoss", preset="miou", num_classes=C))
    logits, labels = _batch(5)
    weight = torch.ones(labels.shape)
    weight[:, 5:, :] = 0
    dropped = labels.clone()
    dropped[:, 5:, :] = 255
    want = loss(logits, dropped)
    torch.testing.assert_close(loss(logits, labels, weight=weight), want)
    assert abs(float(want) - float(loss(logits, labels))) > 1e-6  # the weights mattered
    with pytest.raises(ValueError, match="0/1 pixel weights"):
        loss(logits, labels, weight=weight * 0.5)
    with pytest.raises(ValueError, match="label's shape"):
        loss(logits, labels, weight=weight[:, :4])


def test_mmseg_keyword_arguments_are_accepted() -> None:
    loss = MODELS.build(dict(type="AutoSegLoss", preset="gacc", num_classes=C))
    logits, labels = _batch(6)
    torch.testing.assert_close(loss(logits, labels, avg_factor=7, reduction_override=None),
                               loss(logits, labels))


def test_it_trains() -> None:
    """Adam on a 1x1 conv over fixed features lowers the registry-built loss (the labels are
    a linear function of the features, so the conv can fit them)."""
    torch.manual_seed(0)
    feats = torch.randn(2, 8, 12, 16)
    labels = torch.einsum("nkhw,kc->nchw", feats, torch.randn(8, C)).argmax(1)
    net = torch.nn.Conv2d(8, C, 1)
    loss_fn = MODELS.build(dict(type="AutoSegLoss", preset="miou", num_classes=C))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    values = []
    for _ in range(30):
        loss = loss_fn(net(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    assert values[-1] < values[0] - 0.1, values


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (dict(preset="miou", theta=[0.1], num_classes=C), ValueError, "one of loss_file"),
        (dict(num_classes=C), ValueError, "needs metric"),
        (dict(metric="miou"), ValueError, "needs num_classes"),
        (dict(metric="biou", preset="miou", num_classes=C), ValueError, "differs from preset"),
        (dict(preset="miou", num_classes=C, loss_weight=-1.0), ValueError, "loss_weight"),
        (dict(preset="miou", num_classes=C, loss_weight=float("nan")), ValueError,
         "loss_weight"),
        (dict(preset="miou", num_classes=C, loss_weight="1"), TypeError, "loss_weight"),
        (dict(preset="miou", num_classes=C, loss_name="autoseg"), ValueError, "loss_"),
        (dict(metric="mIoU?", num_classes=C), ValueError, "mIoU"),
        (dict(preset="miou", num_classes=C, no_such_option=1), TypeError, "no_such_option"),
    ],
)
def test_bad_configs_are_refused(config, error, match) -> None:
    with pytest.raises(error, match=match):
        AutoSegLoss(**config)


def test_a_file_of_another_metric_is_refused(tmp_path) -> None:
    path = tmp_path / "biou.json"
    SurrogateLoss("biou", num_classes=C).to_file(path)
    with pytest.raises(ValueError, match="differs from the metric 'biou'"):
        MODELS.build(dict(type="AutoSegLoss", metric="miou", loss_file=str(path)))
    with pytest.raises(FileNotFoundError):
        AutoSegLoss(loss_file=str(tmp_path / "missing.json"), num_classes=C)


def test_the_module_documents_the_mmseg_situation() -> None:
    doc = mmseg_integration.__doc__
    assert "custom_imports" in doc and "mmcv" in doc
