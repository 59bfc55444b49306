"""The metric surrogate losses (docs/paper.md#the-surrogate-losses) and the baseline losses.

- :mod:`.parameterizations`: the monotone curves h (Bezier, linear, identity) and their
  evaluation;
- :mod:`.space`: :data:`CURVES` per metric, :class:`SearchSpace`, :func:`search_space`;
- :mod:`.surrogate`: :class:`SurrogateLoss` (the loss module);
- :mod:`.loss_file`: the loss file format (``FILE_FORMAT``);
- :mod:`.presets`: the paper's searched curves (:func:`preset_theta`);
- :mod:`.baselines`: cross entropy, Dice, Lovasz, ... for comparison;
- private: :mod:`._term_scores` (the soft score of each metric term of the loss),
  :mod:`._eager` (fused torch autograd Functions), :mod:`._native` (bridges to the
  C++ kernels of :mod:`autoloss_ray.native`), :mod:`._triton` (CUDA kernels), :mod:`._boundary`
  (boolean morphology and window reads for BF1).

Names here load lazily, so importing one part (e.g. the presets) never pulls in the others.
"""

from __future__ import annotations

from autoloss_ray._lazy import lazy_getattr

_EXPORTS = {
    "CURVES": "autoloss_ray.losses.space",
    "SearchSpace": "autoloss_ray.losses.space",
    "metric_curves": "autoloss_ray.losses.space",
    "search_space": "autoloss_ray.losses.space",
    "SurrogateLoss": "autoloss_ray.losses.surrogate",
    "FILE_FORMAT": "autoloss_ray.losses.loss_file",
    "FILE_VERSION": "autoloss_ray.losses.loss_file",
    "PRESETS": "autoloss_ray.losses.presets",
    "preset_theta": "autoloss_ray.losses.presets",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
