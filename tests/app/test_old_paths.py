"""One name, one path (issue 30): the old module paths only warn and re-export.

``autoloss_ray.surrogates``, ``.presets``, ``.baselines``, ``.parameterizations`` and ``.ppo``
were the library's first layout; their names live in :mod:`autoloss_ray.losses` and
:mod:`autoloss_ray.search` now. The two ``steps.py`` are :mod:`autoloss_ray.search.step_protocol`
(the pure step protocol) and :mod:`searchers.step_searcher` (its Ray Tune adapter). For one
release the old modules still import, with a ``DeprecationWarning`` naming the new path, and
nothing of the project itself imports them.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

ROOT = REPO

# old module -> (the new path its warning names, {name: the module that defines it now})
OLD_PATHS = {
    "autoloss_ray.surrogates": ("autoloss_ray.losses", {
        "SurrogateLoss": "autoloss_ray.losses",
        "SearchSpace": "autoloss_ray.losses",
        "search_space": "autoloss_ray.losses",
        "CURVES": "autoloss_ray.losses",
        "FILE_FORMAT": "autoloss_ray.losses",
        "FILE_VERSION": "autoloss_ray.losses",
    }),
    "autoloss_ray.presets": ("autoloss_ray.losses.presets", {
        "PRESETS": "autoloss_ray.losses.presets",
        "PRESET_PARAMETERIZATION": "autoloss_ray.losses.presets",
        "preset_theta": "autoloss_ray.losses.presets",
        "control_points_to_theta": "autoloss_ray.losses.presets",
    }),
    "autoloss_ray.baselines": ("autoloss_ray.losses.baselines", {
        "BASELINES": "autoloss_ray.losses.baselines",
        "make_loss": "autoloss_ray.losses.baselines",
        "class_frequency_weights": "autoloss_ray.losses.baselines",
    }),
    "autoloss_ray.parameterizations": ("autoloss_ray.losses.parameterizations", {
        "Parameterization": "autoloss_ray.losses.parameterizations",
        "PARAMETERIZATIONS": "autoloss_ray.losses.parameterizations",
        "get_parameterization": "autoloss_ray.losses.parameterizations",
        "CurveTable": "autoloss_ray.losses.parameterizations",
        "curve_table": "autoloss_ray.losses.parameterizations",
        "evaluate_table": "autoloss_ray.losses.parameterizations",
        "evaluate_table_into": "autoloss_ray.losses.parameterizations",
        "Workspace": "autoloss_ray.losses.parameterizations",
        "EPS_C": "autoloss_ray.losses.parameterizations",
        "EPS_W": "autoloss_ray.losses.parameterizations",
        "SFLOOR": "autoloss_ray.losses.parameterizations",
        "IDENTITY_TABLE": "autoloss_ray.losses.parameterizations",
    }),
    "autoloss_ray.ppo": ("autoloss_ray.search", {
        "PPO2": "autoloss_ray.search",
        "PPOUpdate": "autoloss_ray.search",
        "ppo_update": "autoloss_ray.search",
        "RandomSearch": "autoloss_ray.search",
        "TruncatedNormal": "autoloss_ray.search",
        "check_samples_per_step": "autoloss_ray.search",
    }),
    # the two steps.py, renamed for what they are: the pure protocol and its Tune adapter
    "autoloss_ray.search.steps": ("autoloss_ray.search.step_protocol", {
        "StepProtocol": "autoloss_ray.search.step_protocol",
        "stopped_below": "autoloss_ray.search.step_protocol",
        "STEP_KEY": "autoloss_ray.search.step_protocol",
        "SAMPLE_KEY": "autoloss_ray.search.step_protocol",
        "RECORD_KEYS": "autoloss_ray.search.step_protocol",
        "FAIL_REASONS": "autoloss_ray.search.step_protocol",
    }),
    "searchers.steps": ("searchers.step_searcher", {
        "StepSearcher": "searchers.step_searcher",
        "_STATE_VERSION": "searchers.step_searcher",
    }),
}

# the project's own code: the packages, the scripts, the examples and the tests
PROJECT_DIRS = ["autoloss_ray", "autoloss_app", "searchers", "trainables", "bench", "examples",
                "cluster", "tests"]
PROJECT_FILES = ["search.py"]
SHIMS = {ROOT / (name.replace(".", "/") + ".py") for name in OLD_PATHS}


def _project_python_files() -> list[Path]:
    files = [ROOT / f for f in PROJECT_FILES]
    for d in PROJECT_DIRS:
        files.extend(sorted((ROOT / d).rglob("*.py")))
    return [f for f in files if f not in SHIMS and f != Path(__file__).resolve()]


def _old_imports(path: Path) -> list[str]:
    """The old paths ``path`` imports: import statements, ``from autoloss_ray import ppo`` and
    module names written as strings (lazy export tables, ``importlib.import_module``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name in OLD_PATHS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in OLD_PATHS:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if f"{node.module}.{a.name}" in OLD_PATHS]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in OLD_PATHS:
                found.append(f"line {node.lineno}: {node.value!r}")
    return found


def test_the_scan_finds_project_files() -> None:
    files = _project_python_files()
    names = {f.relative_to(ROOT).as_posix() for f in files}
    assert {"search.py", "autoloss_app/cli.py", "searchers/ppo2.py", "bench/searcher.py",
            "examples/smp_train.py", "autoloss_ray/search/ppo.py"} <= names
    assert not {s.relative_to(ROOT).as_posix() for s in SHIMS} & names


def test_the_scan_catches_each_form(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import autoloss_ray.ppo\n"
                   "from autoloss_ray.presets import PRESETS\n"
                   "from autoloss_ray import baselines\n"
                   "X = {'a': 'autoloss_ray.surrogates'}\n"
                   "from autoloss_ray.losses import SurrogateLoss\n")
    assert [x.split(":")[0] for x in _old_imports(src)] == ["line 1", "line 2", "line 3",
                                                           "line 4"]


def test_no_project_module_imports_an_old_path() -> None:
    bad = {f.relative_to(ROOT).as_posix(): hits
           for f in _project_python_files() if (hits := _old_imports(f))}
    assert bad == {}, f"use autoloss_ray.losses / autoloss_ray.search instead: {bad}"


_OLD_IN_TEXT = re.compile(r"\b(autoloss_ray[./](surrogates|presets|baselines|parameterizations|ppo"
                          r"|search[./]steps)|searchers[./]steps)\b")


def test_docs_and_scripts_teach_only_the_new_paths() -> None:
    """README, docs, ARCHITECTURE and the shell scripts name an old path only to say it is
    deprecated."""
    files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "bench").glob("*.sh")), *sorted((ROOT / "cluster").rglob("*.md")),
             *sorted((ROOT / "cluster").rglob("*.yaml"))]
    bad = []
    for f in files:
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if _OLD_IN_TEXT.search(line) and "deprecat" not in line.lower():
                bad.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert bad == []


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_each_old_path_warns_and_names_the_new_one(old: str) -> None:
    new, names = OLD_PATHS[old]
    sys.modules.pop(old, None)  # a module warns when it runs, i.e. on its first import
    with pytest.warns(DeprecationWarning, match=re.escape(old) + " is deprecated.*" + re.escape(new)):
        module = importlib.import_module(old)
    for name, home in names.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name), name


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def test_a_user_sees_the_warning_at_their_import_line() -> None:
    """Python's default filters show a DeprecationWarning only where ``__main__`` triggers it:
    the warning is attributed to the importing line, not to the shim or importlib."""
    out = _run("import sys\nimport autoloss_ray.ppo\n")
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("<string>:2: DeprecationWarning: autoloss_ray.ppo is "
                                 "deprecated"), out.stderr


def test_the_new_paths_do_not_warn() -> None:
    out = _run("import warnings\n"
               "warnings.filterwarnings('error', message=r'autoloss_ray\\S* is deprecated')\n"
               "from autoloss_ray.losses import SurrogateLoss, search_space, CURVES\n"
               "from autoloss_ray.losses.presets import PRESETS, preset_theta\n"
               "from autoloss_ray.losses.baselines import BASELINES, make_loss\n"
               "from autoloss_ray.losses.parameterizations import get_parameterization\n"
               "from autoloss_ray.search import PPO2, RandomSearch, TruncatedNormal\n"
               "from autoloss_ray.search.step_protocol import StepProtocol\n"
               "import autoloss_ray, autoloss_ray.losses, autoloss_ray.search\n"
               "from searchers.step_searcher import StepSearcher\n"
               "from searchers import PPO2Searcher\n")
    assert out.returncode == 0, out.stderr
    assert "DeprecationWarning" not in out.stderr
