"""Tests of the benchmarks under bench/ at smoke size."""
