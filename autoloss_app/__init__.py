"""The autoloss application: the ``autoloss`` command line, the search job and its resume,
the retrain and evaluate jobs.

It wires the library (``autoloss_ray``), the Ray Tune searchers (``searchers``) and the
trainables (``trainables``) together; it may import all of them, and nothing imports it.
"""
