"""Tests of searchers/: the Ray Tune searcher adapters and the CLI's searchers."""
