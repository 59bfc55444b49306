"""Adapters of the searched loss to training frameworks (each imports its framework itself).

Importing :mod:`autoloss_ray` or this package imports no framework: only the module of one
framework does (:mod:`autoloss_ray.integrations.mmseg` needs ``mmengine``, the ``mmseg``
extra).
"""
