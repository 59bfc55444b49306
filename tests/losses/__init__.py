"""Tests of autoloss_ray.losses: surrogates, presets, baselines, parameterizations, kernels."""
