"""House rules that keep the math pure: the library modules never import ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    "autoloss_ray",
    "autoloss_ray.morphology",
    "autoloss_ray.metrics",
    "autoloss_ray.parameterizations",
    "autoloss_ray.surrogates",
    "autoloss_ray.presets",
    "autoloss_ray.baselines",
    "autoloss_ray.losses",
    "autoloss_ray.losses.space",
    "autoloss_ray.losses.presets",
    "autoloss_ray.losses.surrogate",
    "autoloss_ray.losses.loss_file",
    "autoloss_ray.losses.baselines",
    "autoloss_ray.ppo",
    "autoloss_ray.search",
    "autoloss_ray.search.steps",
    "autoloss_ray.data",
    "autoloss_ray.models",
    "autoloss_ray.train",
    "autoloss_ray.store",
    "autoloss_ray.report",
    "autoloss_app.options",
    "autoloss_ray.export",
    "autoloss_app.cli",
    "autoloss_app.retrain",
    "autoloss_app.evaluate",
    "autoloss_app.resume",
    "autoloss_ray.validation",
    "autoloss_ray.checkpoint",
]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_module_does_not_import_ray(module: str) -> None:
    code = f"import sys, {module}; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"{module} imports ray"


def test_public_api_is_importable_from_package() -> None:
    import autoloss_ray

    for name in autoloss_ray.__all__:
        assert getattr(autoloss_ray, name) is not None, name
    with pytest.raises(AttributeError):
        autoloss_ray.not_a_name  # noqa: B018
