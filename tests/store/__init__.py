"""Tests of autoloss_ray.store: the Parquet store, local and on S3."""
