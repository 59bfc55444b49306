"""Ray Tune trainables and callbacks of autoloss-ray (loaded lazily)."""

from __future__ import annotations

from autoloss_ray._lazy import lazy_getattr

_EXPORTS = {
    "proxy_task": "trainables.proxy",
    "playoff_task": "trainables.proxy",
    "retrain_task": "trainables.proxy",
    "with_gpu_resources": "trainables.proxy",
    "trial_device": "trainables.proxy",
    "StoreCallback": "trainables.store_callback",
    "ProgressCallback": "trainables.progress",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
