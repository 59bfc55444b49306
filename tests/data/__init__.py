"""Tests of autoloss_ray.data: the datasets, the decoded cache, the folder dataset."""
