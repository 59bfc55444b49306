"""Ray Tune trainables and callbacks of autoloss-ray (loaded lazily)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "proxy_task": "trainables.proxy",
    "retrain_task": "trainables.proxy",
    "with_gpu_resources": "trainables.proxy",
    "trial_device": "trainables.proxy",
    "StoreCallback": "trainables.store_callback",
    "ProgressCallback": "trainables.progress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
