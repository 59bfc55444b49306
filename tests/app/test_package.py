"""House rules that keep the math pure: the library modules never import ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    "autoloss_ray",
    "autoloss_ray.morphology",
    "autoloss_ray.metrics",
    "autoloss_ray.losses.parameterizations",
    "autoloss_ray.losses",
    "autoloss_ray.losses.space",
    "autoloss_ray.losses.presets",
    "autoloss_ray.losses.surrogate",
    "autoloss_ray.losses.loss_file",
    "autoloss_ray.losses.baselines",
    "autoloss_ray.search",
    "autoloss_ray.search.step_protocol",
    "autoloss_ray.data",
    "autoloss_ray.models",
    "autoloss_ray.train",
    "autoloss_ray.store",
    "autoloss_ray.report",
    "autoloss_app.options",
    "autoloss_app.option_checks",
    "autoloss_app.common_options",
    "autoloss_app.user_options",
    "autoloss_ray.export",
    "autoloss_app.cli",
    "autoloss_app.retrain",
    "autoloss_app.evaluate",
    "autoloss_app.resume",
    "autoloss_ray.validation",
    "autoloss_ray.checkpoint",
]


# One child imports every module in turn and notes after each whether ray is loaded: a module
# that imports ray (itself or through anything it imports) makes it appear right after its
# own import, since nothing imported before it had loaded ray. (A process per module cost
# ~1.3 s of imports each.)
_IMPORT_EACH = r"""
import importlib, json, sys
seen = {}
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    seen[name] = "ray" in sys.modules
    if seen[name]:
        break
print("SEEN" + json.dumps(seen))
"""


@pytest.fixture(scope="module")
def ray_after_import() -> dict[str, bool]:
    import json

    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(PURE_MODULES)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("SEEN"))
    return json.loads(line[len("SEEN"):])


@pytest.mark.parametrize("module", PURE_MODULES)
def test_module_does_not_import_ray(module: str, ray_after_import: dict[str, bool]) -> None:
    assert module in ray_after_import, "an earlier module of the list imported ray"
    assert ray_after_import[module] is False, f"{module} imports ray"


def test_a_module_importing_ray_is_caught() -> None:
    """The check itself can fail: a module that imports ray is flagged at its own place."""
    import json

    names = ["autoloss_ray.morphology", "searchers.ppo2", "autoloss_ray.search"]
    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)],
                         capture_output=True, text=True, timeout=300)
    seen = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("SEEN"))[4:])
    assert seen == {"autoloss_ray.morphology": False, "searchers.ppo2": True}


def test_public_api_is_importable_from_package() -> None:
    import autoloss_ray

    for name in autoloss_ray.__all__:
        assert getattr(autoloss_ray, name) is not None, name
    with pytest.raises(AttributeError):
        autoloss_ray.not_a_name  # noqa: B018
