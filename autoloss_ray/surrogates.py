"""Deprecated: the surrogate losses live in :mod:`autoloss_ray.losses`.

Importing this module warns (``DeprecationWarning``); it goes away in the next release. Import
``SurrogateLoss``, ``CURVES``, ``SearchSpace``, ``search_space``, ``FILE_FORMAT`` and
``FILE_VERSION`` from :mod:`autoloss_ray.losses` instead. This module only re-exports them.
"""

from __future__ import annotations

import warnings

from autoloss_ray.losses.loss_file import FILE_FORMAT, FILE_VERSION
from autoloss_ray.losses.space import CURVES, SearchSpace, search_space
from autoloss_ray.losses.surrogate import SurrogateLoss

__all__ = ["CURVES", "SearchSpace", "search_space", "SurrogateLoss", "FILE_FORMAT",
           "FILE_VERSION"]

warnings.warn("autoloss_ray.surrogates is deprecated and will be removed in the next release; "
              "import from autoloss_ray.losses instead", DeprecationWarning, stacklevel=2)
