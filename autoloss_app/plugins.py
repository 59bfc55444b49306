"""The user's ``--model MODULE:FUNCTION`` / ``--dataset MODULE:FUNCTION`` in the application:
the checks before Ray starts (:func:`check_plugins`, used by the options of ``search``,
``retrain`` and ``evaluate``) and the Ray runtime environment that ships the working folder to
every worker (:func:`plugin_runtime_env`, given to ``ray.init`` by
:func:`autoloss_app.ray_start.init_ray`). Built-in names cost nothing here: no import, no
runtime environment."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autoloss_ray.plugins import is_plugin, parse_spec
from autoloss_ray.validation import OptionsError

__all__ = ["check_plugins", "plugin_runtime_env", "working_folder_on_path", "EXCLUDES",
           "job_has_working_dir"]

# never shipped to the workers (gitignore patterns relative to the working folder; Ray also
# honours the folder's .gitignore)
EXCLUDES = ("/.venv/", "/venv/", "/.git/", "/runs/", "__pycache__/", "*.pyc", "/.pytest_cache/",
            "/.ruff_cache/", "*.egg-info/")


def working_folder_on_path(cwd: str | None = None) -> None:
    """Put the working folder first on ``sys.path`` (as ``python -m`` does; the ``autoloss``
    console script otherwise starts with its own bin folder there), so ``mymodels:build``
    finds ``./mymodels.py``."""
    cwd = os.path.abspath(cwd or os.getcwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def check_plugins(*, model: str | None, dataset: str, data_root: str | None = None,
                  num_classes: int | None = None, image_size: Any = 64, seed: int = 0,
                  splits: Iterable[str | None] = ("train",),
                  dataset_options: Mapping[str, Any] | None = None,
                  backbone_weights: str | None = None) -> int | None:
    """Import, call and probe a plugin model and dataset before Ray starts; OptionsError (one
    line) on any problem. Returns the class count when a plugin is involved (the dataset's,
    or ``num_classes``), else None without importing anything.

    The model is probed at ``image_size`` with the class count of the dataset (a plugin's, a
    built-in's, or ``num_classes`` when given); ``backbone_weights`` are loaded into it (a
    model without ``backbone`` refuses them)."""
    if not is_plugin(model) and not is_plugin(dataset):
        return None
    from autoloss_ray.data.transforms import as_size, parse_image_size

    working_folder_on_path()
    try:
        size = as_size(parse_image_size(image_size if image_size is not None else 64))
        classes = num_classes
        if is_plugin(dataset):
            info = _check_dataset(dataset, data_root=data_root, num_classes=num_classes,
                                  image_size=size, seed=seed, splits=splits,
                                  options=dataset_options)
            classes = info["num_classes"]
        if is_plugin(model):
            if classes is None:
                classes = _builtin_classes(dataset, data_root, dataset_options)
            from autoloss_ray.plugins import check_model

            net = check_model(model, num_classes=int(classes), image_size=size)
            if backbone_weights:
                from autoloss_ray.models import load_backbone_weights

                load_backbone_weights(net, backbone_weights)
        return None if classes is None else int(classes)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        from autoloss_ray.plugins import one_line

        raise OptionsError(one_line(exc, 600)) from None


def _check_dataset(spec: str, **kwargs: Any) -> dict[str, Any]:
    from autoloss_ray.plugins import check_dataset

    root = kwargs.pop("data_root")
    return check_dataset(spec, root=None if not root else os.path.abspath(root),
                         splits=list(kwargs.pop("splits")), **kwargs)


def _builtin_classes(dataset: str, data_root: str | None,
                     options: Mapping[str, Any] | None) -> int:
    """The class count of built-in dataset ``dataset`` (its class attribute, or the built
    dataset when the class does not say)."""
    from autoloss_ray.data import DATASETS, build_dataset

    classes = getattr(DATASETS.get(dataset), "num_classes", None)
    if isinstance(classes, int):
        return classes
    return int(build_dataset(dataset, root=data_root, split="train", train=False,
                             **dict(options or {})).num_classes)


def job_has_working_dir(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this driver runs inside a Ray job submitted with a ``working_dir`` (``ray job
    submit --working-dir``): the job already ships it, and a second one would conflict."""
    environ = os.environ if environ is None else environ
    raw = environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return False
    try:
        env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return False
    return bool(env.get("working_dir"))


def plugin_runtime_env(specs: Iterable[str | None], *, cwd: str | None = None,
                       exclude: Iterable[str | None] = ()) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` that ships the working folder ``cwd`` to every worker (as ``ray
    job submit --working-dir`` does), or None when no spec is a plugin whose module lives in
    that folder (built-in names; an installed package the workers import themselves).

    ``exclude``: further paths (the store, the Tune folder, the data root, ...) left out
    when they lie inside ``cwd``; :data:`EXCLUDES` always are."""
    cwd = os.path.abspath(cwd or os.getcwd())
    modules = [parse_spec(s)[0] for s in specs if is_plugin(s)]
    if not any(_module_in(m, cwd) for m in modules):
        return None
    excludes = list(EXCLUDES)
    for path in exclude:
        if not path or "://" in str(path):
            continue
        rel = os.path.relpath(os.path.abspath(path), cwd)
        if rel != "." and not rel.startswith(".."):
            excludes.append("/" + Path(rel).as_posix())
    return {"working_dir": cwd, "excludes": excludes}


def _module_in(module: str, folder: str) -> bool:
    """Whether top-level module/package ``module`` is found in ``folder`` (a file
    ``folder/module.py`` or a package ``folder/module/``), looked up without importing."""
    top = module.split(".")[0]
    base = Path(folder)
    if (base / f"{top}.py").is_file() or (base / top / "__init__.py").is_file():
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin:
        return False
    try:
        Path(origin).resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True
