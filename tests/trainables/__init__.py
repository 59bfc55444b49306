"""Tests of trainables/: the Ray Tune trainables, retrain, the user's plugins and train functions."""
