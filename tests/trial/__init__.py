"""Tests of autoloss_ray.train and trial/: the proxy trial, models, device features."""
