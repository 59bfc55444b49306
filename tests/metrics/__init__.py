"""Tests of autoloss_ray.metrics: the exact metrics."""
