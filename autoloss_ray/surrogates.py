"""Compatibility module: the surrogate losses live in :mod:`autoloss_ray.losses` now.

Kept so that users' code importing ``autoloss_ray.surrogates`` keeps working; new code should
import from :mod:`autoloss_ray.losses` (``SurrogateLoss`` from :mod:`.losses.surrogate`,
``CURVES``/``SearchSpace``/``search_space`` from :mod:`.losses.space`, ``FILE_FORMAT`` from
:mod:`.losses.loss_file`). This module only re-exports those names.
"""

from __future__ import annotations

from autoloss_ray.losses.loss_file import FILE_FORMAT, FILE_VERSION
from autoloss_ray.losses.space import CURVES, SearchSpace, search_space
from autoloss_ray.losses.surrogate import SurrogateLoss

__all__ = ["CURVES", "SearchSpace", "search_space", "SurrogateLoss", "FILE_FORMAT",
           "FILE_VERSION"]
