"""Tests of Ray clusters, jobs, placement and the multi-process (Gloo) paths."""
