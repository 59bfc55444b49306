"""Tests of autoloss_ray.search: PPO2, the step protocol, the answer rule."""
